"""Loading a faster-whisper model: `ModelManager` (whisper_common.model_manager) calls `load_model` with an id that
whisper_common.model_catalog resolved; the catalogue also says where the model is and names load failures."""
from __future__ import annotations

from dataclasses import dataclass

from faster_whisper import WhisperModel

from whisper_common.model_catalog import default_compute_type, describe_load_failure, inference_device, model_location
from whisper_faster.settings import Settings


@dataclass(frozen=True)
class LoadedModel:
    """A loaded faster-whisper model and what the API needs to know about it."""

    model_id: str
    whisper: WhisperModel

    @property
    def multilingual(self) -> bool:
        return bool(self.whisper.model.is_multilingual)


def load_model(model_id: str, settings: Settings) -> LoadedModel:
    """Load through faster-whisper (its hub download and cache for ids, the directory for paths); domain errors only."""
    device = inference_device(settings.whisper.inference_device)
    try:
        whisper = WhisperModel(
            model_location(model_id, settings),
            device=device,
            device_index=settings.whisper.device_index,
            compute_type=default_compute_type(settings.whisper.compute_type, device),
            cpu_threads=settings.whisper.cpu_threads,
            num_workers=settings.whisper.num_workers,
        )
    except Exception as exc:  # noqa: BLE001 - every library failure becomes a named error for the client
        raise describe_load_failure(model_id, exc) from exc
    return LoadedModel(model_id=model_id, whisper=whisper)
