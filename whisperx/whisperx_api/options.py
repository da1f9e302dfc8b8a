"""WhisperX's options model: the shared fields (whisper_common.options, `hallucination_guard` among them),
`diarized_json` and `rttm`, and the diarization extensions (`diarize`, `min_speakers`, `max_speakers`, `speakers`)
and `batch_size`. Jobs
take it as JSON; the routes' forms are it (`/v1/audio/transcriptions`) or a part of it (`/transcribe`,
`/v1/audio/translations`), with the known speakers' clips where a route takes them."""
from __future__ import annotations

from typing import Annotated

from fastapi import UploadFile
from pydantic import Field, model_validator

from whisper_common.errors import InvalidParameter
from whisper_common.openai_formats import TRANSCRIPTION_FORMATS, ResponseFormat
from whisper_common.options import (
    FormModel,
    HallucinationGuard,
    Language,
    ModelName,
    Prompt,
    Temperature,
    TranscriptionOptions,
    response_format_type,
)
from whisper_common.speakers.library import Selection
from whisperx_api.diarize.base import SpeakerBounds
from whisperx_api.diarize.known import MAX_KNOWN_SPEAKERS

FORMATS = (*TRANSCRIPTION_FORMATS, ResponseFormat.DIARIZED_JSON, ResponseFormat.RTTM)
TRANSCRIBE_FORMATS = (ResponseFormat.JSON, ResponseFormat.SRT, ResponseFormat.VTT, ResponseFormat.TEXT, ResponseFormat.RTTM)
DIARIZED_FORMATS = (ResponseFormat.DIARIZED_JSON.value, ResponseFormat.RTTM.value)
NAMES = "known_speaker_names[]"
REFERENCES = "known_speaker_references[]"

Diarize = Annotated[
    bool | None,
    Field(description="Extension: label speakers. Default: true for `diarized_json` and `rttm`, or with known speakers "
          "(`speakers`, reference clips), else false."),
]
Speakers = Annotated[
    str | None,
    Field(
        max_length=4000,
        description="Extension: name diarized speakers from your voiceprint library (`/v1/speakers`): `library` (all "
        "of them) or names or ids, comma-separated (`Maria,Tom`). A speaker whose voice matches one takes its name "
        "(turns also carry the similarity); unknown voices keep their labels. Implies diarization; may be combined "
        "with reference clips (a clip's name wins over a voiceprint's).",
    ),
]
MinSpeakers = Annotated[int | None, Field(ge=1, le=64, description="With diarization: at least this many speakers.")]
MaxSpeakers = Annotated[int | None, Field(ge=1, le=64, description="With diarization: at most this many speakers.")]
BatchSize = Annotated[
    int | None, Field(ge=1, le=256, description="WhisperX batch size (speech chunks decoded together); unset: BATCH_SIZE.")
]
WhisperXTemperature = Annotated[
    Temperature, Field(description="Accepted for compatibility; WhisperX's batched decoding is beam search.")
]


class WhisperXOptions(TranscriptionOptions):
    """What a WhisperX transcription asks for (the task is the route's: jobs transcribe)."""

    response_format: response_format_type(FORMATS) = None  # type: ignore[valid-type]
    temperature: WhisperXTemperature = None
    diarize: Diarize = None
    min_speakers: MinSpeakers = None
    max_speakers: MaxSpeakers = None
    batch_size: BatchSize = None
    speakers: Speakers = None

    @model_validator(mode="after")
    def _bounds(self) -> WhisperXOptions:
        if self.min_speakers is not None and self.max_speakers is not None and self.min_speakers > self.max_speakers:
            raise InvalidParameter(
                "min_speakers",
                f"min_speakers ({self.min_speakers}) must not be greater than max_speakers ({self.max_speakers})",
            )
        if self.diarize is False and self.selection is not None:
            raise InvalidParameter("speakers", "speakers names diarized speakers: it cannot be used with diarize=false")
        if self.diarize is False and self.response_format == ResponseFormat.RTTM.value:
            raise InvalidParameter("response_format", "rttm holds the diarizer's turns: it cannot be used with "
                                   "diarize=false")
        return self

    @property
    def selection(self) -> Selection | None:
        """The voiceprints asked for (`library`, or names): None when none were."""
        return Selection.parse(self.speakers)

    @property
    def bounds(self) -> SpeakerBounds:
        return SpeakerBounds(self.min_speakers, self.max_speakers)

    def with_speakers(self, known: bool) -> bool:
        """Diarize as asked; unasked, for `diarized_json` or when known speakers are given."""
        if self.diarize is not None:
            return self.diarize
        return self.response_format in DIARIZED_FORMATS or known or self.selection is not None


class KnownSpeakerFields(FormModel):
    """`known_speaker_names[]` and `known_speaker_references[]` (OpenAI's `gpt-4o-transcribe-diarize` fields)."""

    known_speaker_names: list[str] | None = Field(
        None,
        alias=NAMES,
        description=f"Up to {MAX_KNOWN_SPEAKERS} names, one per `{REFERENCES}` clip (2-10 s of that voice, a file "
        "part or a data URL). A diarized speaker whose voice matches a clip is labelled with its name. Implies "
        "diarization.",
    )
    known_speaker_references: list[UploadFile | str] | None = Field(
        None,
        alias=REFERENCES,
        description=f"One reference clip per `{NAMES}` entry, in the same order: a file part or a data URL "
        "(`data:audio/wav;base64,...`), 2-10 s of that speaker alone.",
    )


class TranscriptionForm(WhisperXOptions, KnownSpeakerFields):
    """`POST /v1/audio/transcriptions`: the file, the options, the known speakers, `stream` and `chunking_strategy`."""

    stream: bool = Field(
        False,
        description="`text/event-stream`: `transcript.text.delta` (or `transcript.text.segment` with `diarized_json`) "
        "per segment, then `transcript.text.done`.",
    )
    chunking_strategy: str | None = Field(None, description="Accepted for compatibility (WhisperX's VAD chunks).")


class TranscribeForm(KnownSpeakerFields):
    """`POST /transcribe`: the WhisperX API's fields."""

    model: ModelName = None
    language: Language = None
    diarize: Diarize = None
    min_speakers: MinSpeakers = None
    max_speakers: MaxSpeakers = None
    batch_size: BatchSize = None
    speakers: Speakers = None
    hallucination_guard: HallucinationGuard = True
    response_format: response_format_type(TRANSCRIBE_FORMATS) = None  # type: ignore[valid-type]


class TranslationForm(FormModel):
    """`POST /v1/audio/translations`: speech in any language as English text."""

    model: ModelName = None
    prompt: Prompt = None
    response_format: response_format_type(TRANSCRIPTION_FORMATS) = None  # type: ignore[valid-type]
    temperature: WhisperXTemperature = None
    batch_size: BatchSize = None
    hallucination_guard: HallucinationGuard = True
