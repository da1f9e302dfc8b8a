"""What a service hands the jobs core: its own transcription path, its form fields, its result formats.

    class MyEngine:
        options_model = MyJobOptions          # a pydantic model of the sync route's form fields (400s at submit)
        formats = TRANSCRIPTION_FORMATS       # what GET /v1/jobs/{id}/result offers

        async def run(self, audio: Path, options: MyJobOptions, progress: ProgressCallback,
                      cancel: threading.Event) -> Transcript:
            ...   # the service's gate, model manager and engine; call progress(done, total) per segment and stop
                  # at the next segment once `cancel` is set

An options model may have `response_format` (the default of /result) and `timestamp_granularities` (used by the
verbose_json and diarized_json results); the core reads them by name and knows nothing else of it.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from whisper_common.openai_formats import ResponseFormat, parse_granularities
from whisper_common.transcript import Segment, Transcript, Word

ProgressCallback = Callable[[float, float | None], None]


class JobOptions(BaseModel):
    """Base of a service's job options: an unknown field is a 400 at submit, and `timestamp_granularities` parses as
    on the synchronous routes (one value or several; `timestamp_granularities[]` in a form)."""

    model_config = ConfigDict(extra="forbid")

    timestamp_granularities: list[str] | None = Field(
        None, description="`segment` and/or `word` (`timestamp_granularities[]` in a form): words in verbose_json."
    )

    @field_validator("timestamp_granularities", mode="before")
    @classmethod
    def _granularities(cls, value: Any) -> Any:
        values = [value] if isinstance(value, str) else value
        if values is None:
            return None
        return sorted(item.value for item in parse_granularities(values, ResponseFormat.VERBOSE_JSON))


class JobEngine(Protocol):
    options_model: type[BaseModel]
    formats: Sequence[ResponseFormat]

    async def run(
        self, audio: Path, options: Any, progress: ProgressCallback, cancel: threading.Event
    ) -> Transcript: ...


def transcript_to_json(transcript: Transcript) -> str:
    return json.dumps(asdict(transcript), separators=(",", ":"), ensure_ascii=False)


def transcript_from_json(text: str) -> Transcript:
    data: dict[str, Any] = json.loads(text)
    segments = []
    for segment in data.pop("segments"):
        words = segment.pop("words")
        segments.append(Segment(**segment, words=[Word(**word) for word in words] if words is not None else None))
    return Transcript(segments=segments, **data)
