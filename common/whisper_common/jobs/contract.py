"""What a service hands the jobs core: its own transcription path, its options model, its result formats.

    class MyEngine:
        options_model = MyJobOptions          # the service's options model (whisper_common.options): 400s at submit
        formats = TRANSCRIPTION_FORMATS       # what GET /v1/jobs/{id}/result offers

        def check(self, options: MyJobOptions) -> None:
            ...   # at submit, what needs the service (e.g. an English-only model asked for German): raise an ApiError

        async def run(self, audio: Path, options: MyJobOptions, progress: ProgressCallback,
                      cancel: threading.Event) -> Transcript:
            ...   # the service's own transcribe_file: call progress(done, total) per segment and stop at the next
                  # segment once `cancel` is set

An options model has `response_format` (the default of /result) and `timestamp_granularities` (used by the
verbose_json and diarized_json results); the core reads them by name and knows nothing else of it. Jobs store the
options as the model's JSON and read them back with it, so a field a service adds later needs a default.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from whisper_common.openai_formats import ResponseFormat
from whisper_common.options import TranscriptionOptions
from whisper_common.transcript import Segment, Transcript, Word

ProgressCallback = Callable[[float, float | None], None]


JobOptions = TranscriptionOptions
"""The base of a service's job options: the options both services share (an unknown field is a 400 at submit)."""


class JobEngine(Protocol):
    options_model: type[BaseModel]
    formats: Sequence[ResponseFormat]

    def check(self, options: Any) -> None: ...

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
