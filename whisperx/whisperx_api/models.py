"""Loading a Whisper model as faster-whisper's batched pipeline (ids are resolved and located by
whisper_common.model_catalog, which also names load failures).

WhisperX's own `FasterWhisperPipeline` wraps the same CTranslate2 model in a transformers pipeline and runs
pyannote's segmentation model as its VAD; `faster_whisper.BatchedInferencePipeline` does the same batching with
the Silero VAD bundled in faster-whisper (ONNX, 2 % of the decoding time instead of ~40 %) and computes word
timings from the encoder output it already has. Importing neither transformers nor pyannote.audio also keeps
~300 MB out of the service's memory.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from whisper_common.model_catalog import describe_load_failure, model_location
from whisper_common.settings import ServiceSettings

logger = logging.getLogger("whisperx_api.models")


@dataclass
class LoadedModel:
    """A faster-whisper model, its batched pipeline, and what the rest of the pipeline needs to know about it."""

    model_id: str
    whisper: Any  # faster_whisper.WhisperModel
    batched: Any  # faster_whisper.BatchedInferencePipeline
    multilingual: bool
    # BatchedInferencePipeline keeps per-call state (the last speech timestamp for word timings): one call at a time.
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class LoaderOptions:
    device: str
    device_index: int
    compute_type: str
    cpu_threads: int
    num_workers: int


class WhisperXLoader:
    """Loads a Whisper model (CTranslate2) and wraps it in faster-whisper's batched pipeline."""

    def __init__(self, options: LoaderOptions, settings: ServiceSettings) -> None:
        self.options = options
        self.settings = settings

    def __call__(self, model_id: str) -> LoadedModel:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        try:
            location = model_location(model_id, self.settings)
            whisper = WhisperModel(
                location,
                device=self.options.device,
                device_index=self.options.device_index,
                compute_type=self.options.compute_type,
                cpu_threads=self.options.cpu_threads,
                num_workers=self.options.num_workers,
            )
        except Exception as exc:  # noqa: BLE001 - every library failure becomes a named error for the client
            raise describe_load_failure(model_id, exc) from exc
        return LoadedModel(
            model_id=model_id,
            whisper=whisper,
            batched=BatchedInferencePipeline(whisper),
            multilingual=bool(whisper.model.is_multilingual),
        )


def route_library_logs_to_root() -> None:
    """whisperx and Lightning give their loggers plain-text handlers; send their records through the JSON root handler."""
    for name in ("whisperx", "lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        library_logger = logging.getLogger(name)
        # A handler must stay attached: whisperx re-installs its own on import when the logger has none.
        library_logger.handlers[:] = [logging.NullHandler()]
        library_logger.propagate = True
