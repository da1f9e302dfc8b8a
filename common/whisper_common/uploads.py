"""Upload limits enforced while the body streams in, and audio decoding to 16 kHz mono float32.

    app.add_middleware(UploadLimitMiddleware, max_bytes=..., read_timeout=...)       # create_service_app does this
    audio = decode_audio(upload.file, max_seconds=settings.max_audio_seconds)          # in a worker thread

The middleware answers 413 up front when Content-Length is over the limit, and otherwise counts the bytes of the
body as they arrive (chunked uploads included) and stops the request at the first byte over it; it closes an upload
that sends nothing for BODY_READ_TIMEOUT_SECONDS (408), answers a multipart body cut before its closing boundary with
400 `incomplete_multipart`, and logs a client that leaves mid-upload as 499. The body is never held in memory here:
Starlette's multipart parser spools file parts to a temporary file.

`decode_audio` uses PyAV directly. It does not call faster_whisper.decode_audio, whose trailing gc.collect() costs
~0.3 s per request in a process full of objects (a model, a web framework).
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whisper_common.errors import (
    AudioDecodeError,
    AudioTooLong,
    EmptyAudio,
    IncompleteMultipart,
    TruncatedAudio,
    UploadStalled,
    UploadTooLarge,
    client_disconnected_response,
    error_response,
)

SAMPLE_RATE = 16_000
logger = logging.getLogger("whisper_common.uploads")
_TRUNCATION_TOLERANCE = 0.9


class _BodyAborted(Exception):
    """Raised from `receive` to stop the app reading a body that is already answered (413, 408, 400, 499)."""


class UploadLimitMiddleware:
    """ASGI middleware that watches a request body as it streams in, and answers in OpenAI's error JSON when it is:
    over `max_bytes` (413), stalled with no byte for `read_timeout` seconds (408, connection closed; a slow upload
    that keeps sending is never cut), a multipart body that ends before its closing boundary (400
    `incomplete_multipart`), or abandoned by a client that went away (logged as 499)."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float = 60.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await error_response(UploadTooLarge(self.max_bytes))(scope, receive, send)
            return

        closing = _multipart_closing_delimiter(scope)
        tail = b""
        received = 0
        body_done = False
        failure: Response | None = None
        response_started = False

        def abort(response: Response) -> _BodyAborted:
            nonlocal failure
            failure = response
            return _BodyAborted()

        async def watched_receive() -> Message:
            nonlocal received, body_done, tail
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except asyncio.TimeoutError:
                logger.info("upload stalled; closing", extra={"received_bytes": received, "timeout_s": self.read_timeout})
                raise abort(error_response(UploadStalled(self.read_timeout))) from None
            if message["type"] == "http.disconnect":
                logger.info("client disconnected during the upload", extra={"received_bytes": received})
                raise abort(client_disconnected_response())
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                raise abort(error_response(UploadTooLarge(self.max_bytes)))
            if closing is not None:
                tail = (tail + chunk)[-(len(closing) + 8) :]
            if not message.get("more_body", False):
                body_done = True
                if closing is not None and closing not in tail:
                    raise abort(error_response(IncompleteMultipart()))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if failure is not None and not response_started:
                return  # whatever the app made of the aborted body is replaced by `failure` below
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, watched_receive, guarded_send)
        except Exception:
            if failure is None:
                raise
        if failure is not None and not response_started:
            await failure(scope, receive, send)


def _multipart_closing_delimiter(scope: Scope) -> bytes | None:
    """`--<boundary>--` for a multipart/form-data request, else None."""
    content_type = _header(scope, b"content-type")
    if content_type is None:
        return None
    media_type, _, params = content_type.partition(b";")
    if media_type.strip().lower() != b"multipart/form-data":
        return None
    for param in params.split(b";"):
        name, _, value = param.strip().partition(b"=")
        if name.strip().lower() == b"boundary" and value.strip().strip(b'"'):
            return b"--" + value.strip().strip(b'"') + b"--"
    return None


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return value
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    """Mono float32 samples at SAMPLE_RATE, in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def decode_audio(source: BinaryIO | str, *, max_seconds: float = 0, sample_rate: int = SAMPLE_RATE) -> DecodedAudio:
    """Decode any audio FFmpeg reads into mono float32 at `sample_rate`.

    Raises EmptyAudio (0 bytes / 0 samples), AudioDecodeError (not audio, no audio stream), TruncatedAudio (the
    header declares noticeably more audio than the file holds) and AudioTooLong (over `max_seconds`, 0 = no limit).
    """
    if _is_empty(source):
        raise EmptyAudio()
    _check_riff_data_size(source)
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"the uploaded file is not audio FFmpeg can read ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise AudioDecodeError("the uploaded file has no audio stream")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if max_seconds and declared is not None and declared > max_seconds + 1:
            raise AudioTooLong(declared, max_seconds)
        chunks, decode_errors = _decode_stream(container, stream, sample_rate, max_seconds)
    # s16 then /32768, as faster-whisper does, so a transcript here equals one made by faster-whisper itself.
    samples = (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)).astype(np.float32) / 32768.0
    audio = DecodedAudio(samples, sample_rate)
    if audio.samples.size == 0:
        if decode_errors:
            raise AudioDecodeError("the uploaded file could not be decoded as audio (no decodable frame)")
        raise EmptyAudio("the uploaded audio has no samples (0 seconds)")
    if max_seconds and audio.duration > max_seconds:
        raise AudioTooLong(audio.duration, max_seconds)
    if declared is not None and declared > 0.5 and audio.duration < declared * _TRUNCATION_TOLERANCE:
        raise TruncatedAudio(
            f"the uploaded audio is truncated: its header declares {declared:.2f} s but only "
            f"{audio.duration:.2f} s could be decoded"
        )
    return audio


def _decode_stream(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, sample_rate: int, max_seconds: float
) -> tuple[list[np.ndarray], int]:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    decoded_samples = 0
    decode_errors = 0
    limit_samples = math.ceil((max_seconds + 1) * sample_rate) if max_seconds else None
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            break
        except av.error.InvalidDataError:
            decode_errors += 1
            if decode_errors > 100:
                break
            continue
        except av.error.FFmpegError:
            decode_errors += 1
            break
        for resampled in resampler.resample(frame):
            chunk = resampled.to_ndarray().reshape(-1)
            chunks.append(chunk)
            decoded_samples += chunk.size
        if limit_samples is not None and decoded_samples > limit_samples:
            break
    for resampled in resampler.resample(None):
        chunks.append(resampled.to_ndarray().reshape(-1))
    return chunks, decode_errors


_RIFF_HEADER = 12
_CHUNK_HEADER = 8
_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)  # what streaming writers (FFmpeg to a pipe, arecord) put before they know


def _check_riff_data_size(source: BinaryIO | str) -> None:
    """TruncatedAudio when a WAV's `data` chunk declares more bytes than the file holds.

    FFmpeg's WAV reader caps the declared duration at the file size, so the decoded-vs-declared comparison in
    `decode_audio` cannot see a cut WAV: the header itself must be read."""
    if isinstance(source, str):
        with open(source, "rb") as file:
            _check_riff_file(file)
        return
    position = source.tell()
    try:
        source.seek(0)
        _check_riff_file(source)
    finally:
        source.seek(position)


def _check_riff_file(file: BinaryIO) -> None:
    header = file.read(_RIFF_HEADER)
    if len(header) < _RIFF_HEADER or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return
    file.seek(0, 2)
    size = file.tell()
    offset = _RIFF_HEADER
    while offset + _CHUNK_HEADER <= size:
        file.seek(offset)
        chunk_id, chunk_size = struct.unpack("<4sI", file.read(_CHUNK_HEADER))
        body = offset + _CHUNK_HEADER
        if chunk_id == b"data":
            present = size - body
            if chunk_size not in _UNKNOWN_DATA_SIZES and present < chunk_size * _TRUNCATION_TOLERANCE:
                raise TruncatedAudio(
                    f"the uploaded WAV is truncated: its header declares {chunk_size} bytes of audio data but the "
                    f"file holds {present}"
                )
            return
        offset = body + chunk_size + (chunk_size & 1)  # chunks are word-aligned
    if offset > size:
        raise TruncatedAudio("the uploaded WAV is truncated: it ends inside a header chunk, before any audio data")


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _is_empty(source: BinaryIO | str) -> bool:
    if isinstance(source, str):
        return os.path.getsize(source) == 0
    position = source.tell()
    source.seek(0, 2)
    size = source.tell()
    source.seek(position)
    return size == 0


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip() or type(exc).__name__
