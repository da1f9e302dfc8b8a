"""whisper-faster's configuration: the shared ServiceSettings (WHISPER__*, API_KEYS, limits, concurrency, uvicorn)."""
from __future__ import annotations

from whisper_common.settings import ServiceSettings


class Settings(ServiceSettings):
    """Environment variables of whisper-faster. Every field is documented for the configuration reference."""
