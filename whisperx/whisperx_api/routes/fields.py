"""Form fields both transcription routes accept."""
from __future__ import annotations

from typing import Annotated

from fastapi import File, Form, UploadFile

FileField = Annotated[
    UploadFile, File(description="The audio file (any format FFmpeg reads: wav, flac, mp3, ogg, m4a, webm, ...).")
]
ModelField = Annotated[
    str | None,
    Form(
        description="`tiny`, `base`, `small`, `medium`, `large-v2`, `large-v3`, a Hugging Face repo id, or a local "
        "directory configured by the operator. Unset (or `whisper-1`): WHISPER__MODEL (embedded `tiny.en` by default)."
    ),
]
LanguageField = Annotated[str | None, Form(description="ISO 639-1 code of the spoken language; unset: detected.")]
MinSpeakersField = Annotated[int | None, Form(description="With diarization: at least this many speakers.")]
MaxSpeakersField = Annotated[int | None, Form(description="With diarization: at most this many speakers.")]
BatchSizeField = Annotated[
    int | None, Form(ge=1, le=256, description="WhisperX batch size (speech chunks decoded together); unset: BATCH_SIZE.")
]
