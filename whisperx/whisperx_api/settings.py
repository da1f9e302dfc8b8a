"""WhisperX service settings: the shared ServiceSettings plus alignment and diarization (pydantic-settings).

Nested fields use `__`: `ALIGNMENT__MODE=whisper`, `DIARIZATION__BACKEND=embedded`, `EMBEDDED_DIARIZER__WINDOW_SECONDS=1.5`.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from whisper_common.batching.settings import SchedulerSettings, max_concurrency_field, max_queue_field
from whisper_common.settings import ServiceSettings
from whisper_common.speakers.settings import SpeakerLibrarySettings
from whisperx_api.diarize.embedded import EmbeddedDiarizerOptions
from whisperx_api.diarize.known import KNOWN_SPEAKER_THRESHOLD

DEFAULT_PYANNOTE_PIPELINE = "pyannote/speaker-diarization-community-1"


class AlignmentSettings(BaseModel):
    """How word timings are made (env prefix `ALIGNMENT__`)."""

    mode: Literal["auto", "wav2vec2", "whisper"] = Field(
        "auto",
        description="`auto`: WhisperX's wav2vec2 alignment when the language's alignment model can be loaded (cache or "
        "download), else Whisper's cross-attention word timings snapped to speech edges. `wav2vec2`: fail when it "
        "cannot be loaded. `whisper`: always the cross-attention timings.",
    )
    model: str | None = Field(
        None, description="A wav2vec2 alignment model (torchaudio bundle name or Hugging Face id) to use for every language."
    )
    model_dir: str | None = Field(None, description="Where alignment models are cached/downloaded (unset: library default).")
    load_timeout_seconds: float = Field(
        20, gt=0, le=3600, description="How long a request waits for an alignment model download before using the fallback."
    )
    retry_seconds: float = Field(
        600, ge=0, le=86400, description="After an alignment model failed to load, use the fallback this long before retrying."
    )


class VadSettings(BaseModel):
    """Which audio is decoded: the Silero VAD bundled with faster-whisper (env prefix `VAD__`).

    Speech regions are merged into chunks of up to 30 s and decoded in batches; audio outside them is not
    transcribed, so these favour keeping speech (a lower threshold and wider padding than faster-whisper's batched
    defaults: quiet or far-field speakers are kept, at the cost of decoding a little more silence)."""

    threshold: float = Field(0.35, gt=0, lt=1, description="Silero speech probability above which a frame is speech.")
    min_silence_ms: int = Field(160, ge=0, le=10000, description="Silence that ends a speech region.")
    speech_pad_ms: int = Field(200, ge=0, le=2000, description="Audio kept on each side of a speech region.")


class DiarizationSettings(BaseModel):
    """Who speaks when (env prefix `DIARIZATION__`)."""

    backend: Literal["auto", "pyannote", "embedded"] = Field(
        "auto",
        description="`auto`: the pyannote pipeline when HF_TOKEN is set, PYANNOTE_PIPELINE is a local directory, or the "
        "pipeline is in the Hugging Face cache; otherwise the embedded diarizer. `pyannote` / `embedded`: always that one.",
    )
    retry_seconds: float = Field(
        300, ge=0, le=86400, description="After the pyannote pipeline failed to load, answer with that error this long before retrying."
    )
    known_speaker_threshold: float = Field(
        KNOWN_SPEAKER_THRESHOLD,
        ge=0,
        le=1,
        description="Known speakers (voiceprints of the library and reference clips): cosine similarity of speaker "
        "embeddings (resemblyzer d-vectors of a diarized speaker's speech and of the known voice) at or above which "
        "the speaker takes the voice's name. The default is the measured operating point where false accepts stay "
        "at or below 1 % of impostor trials (docs/benchmarks.md, known speakers).",
    )
    anchor_known_speakers: bool = Field(
        False,
        description="Let known voices join the clusters of long recordings: a further diarized speaker whose closest "
        "known voice is an already named one, at or above the threshold, takes that name too (a voice the clustering "
        "split in two). Off by default: on the long-recording benchmark it changed neither DER nor counts (docs/speakers.md).",
    )


# The defaults live with the diarizer, so a direct EmbeddedDiarizer() and the service agree.
_DIARIZER_DEFAULTS = EmbeddedDiarizerOptions()


class EmbeddedDiarizerSettings(BaseModel):
    """The embedded diarizer (Silero VAD + resemblyzer + spectral clustering) (env prefix `EMBEDDED_DIARIZER__`)."""

    window_seconds: float = Field(_DIARIZER_DEFAULTS.window_seconds, ge=0.5, le=5, description="Speech window per speaker embedding.")
    step_seconds: float = Field(_DIARIZER_DEFAULTS.step_seconds, ge=0.05, le=2, description="Hop between embedding windows.")
    vad_threshold: float = Field(_DIARIZER_DEFAULTS.vad_threshold, gt=0, lt=1, description="Silero speech probability above which a frame is speech.")
    min_speaker_seconds: float = Field(
        _DIARIZER_DEFAULTS.min_speaker_seconds, gt=0, le=120, description="Speech needed per speaker when the count is estimated (caps the estimate on short audio)."
    )
    max_speakers: int = Field(_DIARIZER_DEFAULTS.max_speakers_default, ge=1, le=64, description="Most speakers estimated when max_speakers is not given.")


class WhisperXSettings(ServiceSettings):
    uvicorn_port: int = Field(8002, ge=1, le=65535, description="Port to listen on.")
    batch_size: int = Field(
        8,
        ge=1,
        le=256,
        description="Windows of speech of one recording decoded together, as faster-whisper's batched pipeline "
        "groups them (a request's `batch_size` overrides); the scheduler fills a batch with other requests' windows "
        "up to SCHEDULER__BATCH_SIZE.",
    )
    max_concurrency: int = max_concurrency_field()
    max_queue: int = max_queue_field()
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings, description="See `SCHEDULER__*`.")
    hf_token: SecretStr | None = Field(
        None, description="Hugging Face token for the gated pyannote pipeline (never logged or returned).", repr=False
    )
    pyannote_pipeline: str = Field(
        DEFAULT_PYANNOTE_PIPELINE, min_length=1, description="pyannote pipeline: a Hugging Face id or a local directory."
    )
    vad: VadSettings = Field(default_factory=VadSettings, description="See `VAD__*`.")
    alignment: AlignmentSettings = Field(default_factory=AlignmentSettings, description="See `ALIGNMENT__*`.")
    diarization: DiarizationSettings = Field(default_factory=DiarizationSettings, description="See `DIARIZATION__*`.")
    embedded_diarizer: EmbeddedDiarizerSettings = Field(
        default_factory=EmbeddedDiarizerSettings, description="See `EMBEDDED_DIARIZER__*`."
    )
    speakers: SpeakerLibrarySettings = Field(default_factory=SpeakerLibrarySettings, description="See `SPEAKERS__*`.")

    @field_validator("hf_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value
