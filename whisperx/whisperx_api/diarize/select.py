"""Which diarizer serves a request: pyannote when it is configured or cached, else the embedded one."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from whisper_common.speakers.encoder import SpeakerEncoder

from whisperx_api.diarize.base import Diarizer
from whisperx_api.diarize.embedded import EmbeddedDiarizer, EmbeddedDiarizerOptions
from whisperx_api.diarize.known import SpeakerMatcher
from whisperx_api.diarize.pyannote import DiarizationUnavailable, PyannoteDiarizer, load_pyannote
from whisperx_api.settings import WhisperXSettings

logger = logging.getLogger("whisperx_api.diarize")


def pipeline_is_cached(pipeline: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(pipeline, "config.yaml"), str)
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return False


class Diarizers:
    """Loads each diarizer once; remembers a pyannote failure for DIARIZATION__RETRY_SECONDS."""

    def __init__(
        self, settings: WhisperXSettings, device: str, encoder: Callable[[], SpeakerEncoder] | None = None
    ) -> None:
        """`encoder`: where the speaker encoder comes from (the voiceprint library's, so one is loaded per process)."""
        self.settings = settings
        self.device = device
        self._encoder_source = encoder
        self._encoder: SpeakerEncoder | None = None
        self._embedded: EmbeddedDiarizer | None = None
        self._pyannote: PyannoteDiarizer | None = None
        self._pyannote_error: tuple[float, DiarizationUnavailable] | None = None
        self._lock = threading.Lock()

    def wants_pyannote(self) -> bool:
        backend = self.settings.diarization.backend
        if backend != "auto":
            return backend == "pyannote"
        pipeline = self.settings.pyannote_pipeline
        return self.settings.hf_token is not None or os.path.isdir(pipeline) or pipeline_is_cached(pipeline)

    def get(self) -> Diarizer:
        return self.pyannote() if self.wants_pyannote() else self.embedded()

    def encoder(self) -> SpeakerEncoder:
        """resemblyzer's encoder: the embedded diarizer's embeddings, and known speakers for every diarizer."""
        with self._lock:
            if self._encoder is None:
                self._encoder = self._encoder_source() if self._encoder_source is not None else SpeakerEncoder()
            return self._encoder

    def matcher(self) -> SpeakerMatcher:
        diarization = self.settings.diarization
        return SpeakerMatcher(self.encoder(), diarization.known_speaker_threshold, diarization.anchor_known_speakers)

    def embedded(self) -> EmbeddedDiarizer:
        encoder = self.encoder()
        with self._lock:
            if self._embedded is None:
                tuning = self.settings.embedded_diarizer
                self._embedded = EmbeddedDiarizer(
                    EmbeddedDiarizerOptions(
                        window_seconds=tuning.window_seconds,
                        step_seconds=tuning.step_seconds,
                        vad_threshold=tuning.vad_threshold,
                        min_speaker_seconds=tuning.min_speaker_seconds,
                        max_speakers_default=tuning.max_speakers,
                    ),
                    encoder=encoder,
                )
            return self._embedded

    def pyannote(self) -> PyannoteDiarizer:
        with self._lock:
            if self._pyannote is not None:
                return self._pyannote
            if self._pyannote_error is not None and time.monotonic() < self._pyannote_error[0]:
                raise self._pyannote_error[1]
            token = self.settings.hf_token.get_secret_value() if self.settings.hf_token else None
            try:
                self._pyannote = PyannoteDiarizer(load_pyannote(self.settings.pyannote_pipeline, token, self.device))
            except DiarizationUnavailable as exc:
                logger.warning("pyannote pipeline unavailable", extra={"reason": exc.message})
                self._pyannote_error = (time.monotonic() + self.settings.diarization.retry_seconds, exc)
                raise
            return self._pyannote
