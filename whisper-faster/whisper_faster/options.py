"""whisper-faster's options model: the shared fields (whisper_common.options, `hallucination_guard` among them) and
faster-whisper's own (`beam_size`, `vad_filter`, `hotwords`). The routes take it as a form, jobs as JSON (with `task`),
and `transcribe_kwargs` turns it into faster-whisper's arguments.

    options = FasterOptions(language="en", beam_size=1)
    model.whisper.transcribe(samples, **options.transcribe_kwargs("transcribe"))
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from whisper_common.options import (
    FormModel,
    HallucinationGuard,
    ModelName,
    Prompt,
    Temperature,
    TranscriptionOptions,
    response_format_type,
)
from whisper_common.openai_formats import TRANSCRIPTION_FORMATS
from whisper_common.transcript import Task

DEFAULT_TEMPERATURES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

BeamSize = Annotated[int, Field(ge=1, le=20, description="Extension: beam search width.")]
VadFilter = Annotated[
    bool, Field(description="Extension: skip non-speech with Silero VAD (always on while `hallucination_guard` is).")
]
Hotwords = Annotated[str | None, Field(description="Extension: words or phrases to favour (names, jargon).")]


class FasterOptions(TranscriptionOptions):
    """What a whisper-faster transcription asks of the model (the task is the route's, or a job's `task`).
    `temperature` unset means faster-whisper's fallback schedule."""

    beam_size: BeamSize = 5
    vad_filter: VadFilter = False
    hallucination_guard: HallucinationGuard = True
    hotwords: Hotwords = None

    def transcribe_kwargs(self, task: Task = "transcribe") -> dict[str, object]:
        """Keyword arguments for WhisperModel.transcribe (also used by the benchmark's direct baseline)."""
        return {
            "task": task,
            "language": self.language,
            "initial_prompt": self.prompt,
            "temperature": DEFAULT_TEMPERATURES if self.temperature is None else self.temperature,
            "word_timestamps": self.word_timestamps,
            "beam_size": self.beam_size,
            # The guard's speech gate: only speech is decoded (audio without any gives no text and costs no decoding).
            "vad_filter": self.vad_filter or self.hallucination_guard,
            "hotwords": self.hotwords or None,
        }


class FasterJobOptions(FasterOptions):
    """A job's options: those of `POST /v1/audio/transcriptions`, and `task` (`/translations` as a job)."""

    task: Literal["transcribe", "translate"] = Field("transcribe", description="`transcribe` or `translate` (to English).")


class TranscriptionForm(FasterOptions, FormModel):
    """`POST /v1/audio/transcriptions`: the file, the options and `stream`."""

    stream: bool = Field(False, description="Send `text/event-stream` events as segments are decoded.")


class TranslationForm(FormModel):
    """`POST /v1/audio/translations`: OpenAI's translation fields, faster-whisper's `beam_size` and `vad_filter`, and
    `hallucination_guard` (the speech's language is detected; the text is English)."""

    model: ModelName = None
    prompt: Prompt = None
    response_format: response_format_type(TRANSCRIPTION_FORMATS) = None  # type: ignore[valid-type]
    temperature: Temperature = None
    beam_size: BeamSize = 5
    vad_filter: VadFilter = False
    hallucination_guard: HallucinationGuard = True
