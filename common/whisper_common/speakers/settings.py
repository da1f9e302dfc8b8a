"""The voiceprint library's settings (env prefix `SPEAKERS__`), a field of each service's settings."""
from __future__ import annotations

from pydantic import BaseModel, Field


class SpeakerLibrarySettings(BaseModel):
    """The voiceprint library, `/v1/speakers` (env prefix `SPEAKERS__`)."""

    database_url: str | None = Field(
        None,
        description="Where voiceprints are kept. Unset: JOBS_DATABASE_URL when that is set, else "
        "`DATA_DIR/speakers.sqlite3` (this service's own library). Point both services at one PostgreSQL database "
        "(this, or the same JOBS_DATABASE_URL) for one library that both use (docs/speakers.md).",
        repr=False,
    )
    keep_audio: bool = Field(
        False,
        description="Keep each enrolment clip's audio (16 kHz, 16-bit) in the database beside its embedding. Off: "
        "only the embeddings (256 numbers per clip) are kept. Voices are biometric data (docs/security.md); the audio "
        "lets an operator re-embed the library when the embedding model changes.",
    )
    max_voiceprints: int = Field(1000, ge=1, le=1_000_000, description="Voiceprints one owner may keep.")
    max_samples: int = Field(20, ge=1, le=1000, description="Enrolment clips one voiceprint may hold.")
    max_clip_seconds: float = Field(60, ge=5, le=600, description="Longest enrolment clip accepted (400 beyond).")
    min_speech_seconds: float = Field(
        1.5, ge=0.5, le=60,
        description="Speech (Silero VAD) an enrolment clip must hold; a clip with less is a 400 (no speech, or too "
        "little of it to embed: the encoder reads 1.6 s windows).",
    )
