"""The pyannote.audio diarization pipeline (gated on the Hugging Face hub, or a local pipeline directory)."""
from __future__ import annotations

import contextlib
import io
import logging
import threading
from typing import Any

import numpy as np

from whisper_common.errors import ApiError
from whisperx_api.diarize.base import SpeakerBounds, SpeakerTurn, relabel_by_first_appearance

logger = logging.getLogger("whisperx_api.diarize.pyannote")
SAMPLE_RATE = 16000


class DiarizationUnavailable(ApiError):
    """The pyannote pipeline could not be loaded (503); the message says what the operator should do."""

    status_code = 503
    error_type = "server_error"
    code = "diarization_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="diarize")


def hub_refused_message(pipeline: str, status: int) -> str:
    return (
        f"the Hugging Face hub refused access to the pyannote pipeline '{pipeline}' (HTTP {status}): set HF_TOKEN to a "
        f"token of an account that has accepted the pyannote model conditions at https://hf.co/{pipeline}, then "
        "restart the service; or use the embedded diarizer, which needs no token: unset HF_TOKEN or set "
        "DIARIZATION__BACKEND=embedded"
    )


def unreachable_message(pipeline: str, reason: str) -> str:
    return (
        f"the pyannote pipeline '{pipeline}' could not be loaded ({reason}); put it in the Hugging Face cache or set "
        "PYANNOTE_PIPELINE to a local pipeline directory, or use the embedded diarizer: unset HF_TOKEN or set "
        "DIARIZATION__BACKEND=embedded"
    )


def _hub_status(exc: BaseException) -> int | None:
    """The hub's HTTP status behind an error; huggingface_hub wraps some (a 403 on the metadata request) in
    LocalEntryNotFoundError, so the cause chain is searched."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if response is not None and getattr(response, "status_code", None):
            return int(response.status_code)
        seen = seen.__cause__ or seen.__context__
    return None


def load_pyannote(pipeline: str, token: str | None, device: str) -> Any:
    """pyannote's Pipeline, or DiarizationUnavailable naming the cause (401/403, unreachable hub, broken files)."""
    import huggingface_hub
    import torch
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from pyannote.audio import Pipeline

    try:
        # pyannote prints its own gated-model help to stdout; the error below says it in the service's words.
        with contextlib.redirect_stdout(io.StringIO()):
            loaded = Pipeline.from_pretrained(pipeline, token=token)
    except (HfHubHTTPError, LocalEntryNotFoundError) as exc:
        status = _hub_status(exc)
        if status in (401, 403):
            raise DiarizationUnavailable(hub_refused_message(pipeline, status)) from None
        if status:
            raise DiarizationUnavailable(unreachable_message(pipeline, f"the hub answered HTTP {status}")) from None
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            raise DiarizationUnavailable(unreachable_message(pipeline, "not cached and HF_HUB_OFFLINE is set")) from None
        raise DiarizationUnavailable(unreachable_message(pipeline, "not cached and the hub is unreachable")) from None
    except Exception as exc:  # noqa: BLE001 - a broken local pipeline or its sub-models
        raise DiarizationUnavailable(unreachable_message(pipeline, f"{type(exc).__name__}: {str(exc)[:200]}")) from None
    if loaded is None:
        raise DiarizationUnavailable(unreachable_message(pipeline, "the hub returned no pipeline"))
    return loaded.to(torch.device(device))


class PyannoteDiarizer:
    method = "pyannote"

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline
        self._lock = threading.Lock()

    def __call__(self, audio: np.ndarray, bounds: SpeakerBounds) -> list[SpeakerTurn]:
        import torch

        with self._lock:
            output = self._pipeline(
                {"waveform": torch.from_numpy(audio[None, :].astype(np.float32)), "sample_rate": SAMPLE_RATE},
                min_speakers=bounds.min_speakers,
                max_speakers=bounds.max_speakers,
            )
        annotation = getattr(output, "speaker_diarization", output)
        return relabel_by_first_appearance(
            [(turn.start, turn.end, label) for turn, _, label in annotation.itertracks(yield_label=True)]
        )
