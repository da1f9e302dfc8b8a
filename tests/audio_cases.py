"""Uploads that are not decodable audio, shared by both services' bad-input tests (each must be a 400 on `file`).

A file is `(filename, content, media type)`; content is bytes, or a callable for fixture-based bytes so that a missing
fixture fails the test that uses it rather than collection."""
from __future__ import annotations

import io
import os
import wave
from collections.abc import Callable

from tests.support import fixture_path

Content = bytes | Callable[[], bytes]
FileSpec = tuple[str, Content, str]
# name: (files, form data, status, param)
Case = tuple[dict[str, FileSpec], dict[str, str], int, str | None]


def zero_second_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(b"")
    return buffer.getvalue()


def fixture_bytes(name: str) -> Callable[[], bytes]:
    return lambda: fixture_path(name).read_bytes()


def truncated_fixture(name: str, keep: float) -> Callable[[], bytes]:
    def content() -> bytes:
        data = fixture_path(name).read_bytes()
        return data[: int(len(data) * keep)]

    return content


BAD_AUDIO: dict[str, FileSpec] = {
    "empty file": ("empty.wav", b"", "audio/wav"),
    "random bytes": ("noise.mp3", os.urandom(20_000), "audio/mpeg"),
    "truncated mp3": ("cut.mp3", truncated_fixture("multilingual.mp3", 0.5), "audio/mpeg"),
    "text file named .wav": ("notes.wav", b"meeting notes\n" * 200, "audio/wav"),
    "zero-second wav": ("zero.wav", zero_second_wav(), "audio/wav"),
}


def bad_audio_cases() -> dict[str, Case]:
    return {name: ({"file": spec}, {}, 400, "file") for name, spec in BAD_AUDIO.items()}


def materialise(files: dict[str, FileSpec]) -> dict[str, tuple[str, bytes, str]]:
    """The files as httpx takes them, fixture contents read now."""
    return {
        field: (name, content() if callable(content) else content, media_type)
        for field, (name, content, media_type) in files.items()
    }
