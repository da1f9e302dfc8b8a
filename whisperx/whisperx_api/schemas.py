"""Pydantic descriptions of the `/transcribe` JSON body, for the OpenAPI schema and Swagger UI only
(`routes/transcribe.whisperx_json` builds the body)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from whisper_common.schemas import ErrorResponse


class TranscribeWord(BaseModel):
    word: str
    start: float
    end: float
    score: float = Field(description="wav2vec2 alignment score, or Whisper's word probability (cross-attention).")
    speaker: str | None = Field(description="`SPEAKER_00`, ... when diarized, else null.")


class TranscribeSegment(BaseModel):
    start: float
    end: float
    text: str
    speaker: str | None = Field(description="`SPEAKER_00`, ... when diarized, else null.")
    words: list[TranscribeWord]


class TranscribeTurn(BaseModel):
    start: float
    end: float
    speaker: str = Field(description="`SPEAKER_00`, ... or the name of a known voice that matched.")
    similarity: float | None = Field(
        None, description="Cosine similarity to the known voice that named the turn; absent for unknown voices."
    )


class TranscribeResponse(BaseModel):
    """`response_format=json` (the default) of `POST /transcribe`."""

    language: str = Field(description="ISO 639-1 code, given or detected.")
    segments: list[TranscribeSegment]
    alignment: Literal["wav2vec2", "whisper-cross-attention"] = Field(
        description="What timed the words: WhisperX's wav2vec2 alignment, or Whisper's cross-attention snapped to speech edges."
    )
    diarization: Literal["pyannote", "embedded", "none"] = Field(description="What labelled the speakers.")
    turns: list[TranscribeTurn] | None = Field(
        None, description="When diarized: who spoke when, the diarizer's own turns (overlapped speech: the dominant "
        "voice), independent of the words."
    )


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "model": ErrorResponse}


TRANSCRIBE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "json: the body below; srt / vtt / text with `[SPEAKER_00] ` before each speaker's text; rttm: "
        "the turns, one `SPEAKER <file> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>` line each.",
        "model": TranscribeResponse,
        "content": {"text/plain": {}, "application/x-subrip": {}, "text/vtt": {}},
    },
    400: _error("Bad audio (empty, undecodable, truncated, too long) or a bad parameter (e.g. min_speakers > max_speakers)"),
    401: _error("Missing or wrong API key"),
    404: _error("Unknown model"),
    413: _error("Upload over MAX_UPLOAD_MB"),
    503: _error("Busy (with Retry-After), or a model or the pyannote pipeline could not be loaded (the message says why)"),
}
