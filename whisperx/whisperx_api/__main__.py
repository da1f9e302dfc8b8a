"""`python -m whisperx_api`: serve the app with uvicorn on UVICORN_HOST:UVICORN_PORT (default 0.0.0.0:8002)."""
from __future__ import annotations

from whisper_common.run import run_service
from whisperx_api.app import create_app
from whisperx_api.settings import WhisperXSettings


def main() -> None:
    run_service(WhisperXSettings(), create_app)


if __name__ == "__main__":
    main()
