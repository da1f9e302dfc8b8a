"""Pydantic descriptions of the OpenAI bodies, for the OpenAPI schema and Swagger UI only (the formatters in
`openai_formats` build the bodies). Use `TRANSCRIPTION_RESPONSES` as a route's `responses=`."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Usage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: int = Field(description="Audio length in seconds, rounded up.")


class TranscriptionJson(BaseModel):
    """`response_format=json` (the default)."""

    text: str
    usage: Usage


class WordTiming(BaseModel):
    word: str
    start: float
    end: float
    speaker: str | None = Field(None, description="Only when diarized (WhisperX).")


class SegmentVerbose(BaseModel):
    id: int = Field(description="0-based.")
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    speaker: str | None = Field(None, description="Only when diarized (WhisperX).")


class TranscriptionVerboseJson(BaseModel):
    """`response_format=verbose_json`: segments unless only `word` granularity was asked; words only when asked."""

    task: Literal["transcribe", "translate"]
    language: str = Field(description="English name, e.g. `english`.")
    duration: float
    text: str
    segments: list[SegmentVerbose] | None = None
    words: list[WordTiming] | None = None


class DiarizedSegment(BaseModel):
    id: int
    start: float
    end: float
    speaker: str | None
    text: str
    type: Literal["transcript.text.segment"] = "transcript.text.segment"


class TranscriptionDiarizedJson(BaseModel):
    """`response_format=diarized_json` (WhisperX)."""

    task: Literal["transcribe"] = "transcribe"
    duration: float
    text: str
    segments: list[DiarizedSegment]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error body, used for every 4xx and 5xx."""

    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "model": ErrorResponse}


TRANSCRIPTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The transcript: JSON for json/verbose_json/diarized_json, plain text for text/srt/vtt, "
        "`text/event-stream` (`transcript.text.delta` ..., then `transcript.text.done`) with `stream=true`.",
        "model": TranscriptionJson | TranscriptionVerboseJson | TranscriptionDiarizedJson,
        "content": {"text/plain": {}, "application/x-subrip": {}, "text/vtt": {}, "text/event-stream": {}},
    },
    400: _error("Bad audio (empty, undecodable, truncated, too long) or a bad parameter"),
    401: _error("Missing or wrong API key"),
    404: _error("Unknown model"),
    413: _error("Upload over MAX_UPLOAD_MB"),
    503: _error("Busy (with Retry-After), or the model could not be loaded"),
}
