"""Loading a Whisper model as a WhisperX batched pipeline (ids are resolved and located by
whisper_common.model_catalog, which also names load failures)."""
from __future__ import annotations

import contextlib
import io
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from whisper_common.model_catalog import describe_load_failure, model_location
from whisper_common.settings import ServiceSettings

logger = logging.getLogger("whisperx_api.models")


@dataclass
class LoadedModel:
    """A WhisperX batched pipeline and what the rest of the pipeline needs to know about it."""

    model_id: str
    pipeline: Any  # whisperx.asr.FasterWhisperPipeline
    multilingual: bool
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def whisper(self) -> Any:  # whisperx.asr.WhisperModel, a faster_whisper.WhisperModel
        return self.pipeline.model


@dataclass(frozen=True)
class LoaderOptions:
    device: str
    device_index: int
    compute_type: str
    cpu_threads: int
    num_workers: int


class WhisperXLoader:
    """Loads a Whisper model into a WhisperX pipeline that shares one VAD model (the one shipped inside whisperx)."""

    def __init__(self, options: LoaderOptions, settings: ServiceSettings) -> None:
        self.options = options
        self.settings = settings
        self._vad: Any = None
        self._vad_lock = threading.Lock()

    def vad(self) -> Any:
        with self._vad_lock:
            if self._vad is None:
                import torch
                from whisperx.vads import Pyannote

                route_library_logs_to_root()

                # token=None: the segmentation model is read from whisperx/assets, never from the hub.
                with contextlib.redirect_stdout(io.StringIO()):  # Lightning prints a checkpoint-upgrade notice
                    self._vad = Pyannote(torch.device(self.options.device), token=None, **VAD_OPTIONS)
            return self._vad

    def __call__(self, model_id: str) -> LoadedModel:
        import whisperx
        from whisperx.asr import WhisperModel

        route_library_logs_to_root()

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
        multilingual = bool(whisper.model.is_multilingual)
        with contextlib.redirect_stdout(io.StringIO()):  # whisperx prints "Use manually assigned vad_model"
            pipeline = whisperx.load_model(
                location,
                device=self.options.device,
                compute_type=self.options.compute_type,
                model=whisper,
                language=None if multilingual else "en",
                vad_model=self.vad(),
                vad_options=VAD_OPTIONS,
            )
        return LoadedModel(model_id=model_id, pipeline=pipeline, multilingual=multilingual)


def route_library_logs_to_root() -> None:
    """whisperx and Lightning give their loggers plain-text handlers; send their records through the JSON root handler."""
    for name in ("whisperx", "lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        library_logger = logging.getLogger(name)
        # A handler must stay attached: whisperx re-installs its own on import when the logger has none.
        library_logger.handlers[:] = [logging.NullHandler()]
        library_logger.propagate = True


VAD_OPTIONS: dict[str, float] = {"chunk_size": 30, "vad_onset": 0.500, "vad_offset": 0.363}
