"""Upload limits enforced while the body streams in, and audio decoding to 16 kHz mono float32.

    app.add_middleware(UploadLimitMiddleware, max_bytes=..., read_timeout=...)       # create_service_app does this
    audio = decode_audio(upload.file, max_seconds=settings.max_audio_seconds)          # in a worker thread

The middleware answers 413 up front when Content-Length is over the limit, and otherwise counts the bytes of the
body as they arrive (chunked uploads included) and stops the request at the first byte over it; it closes an upload
that sends nothing for BODY_READ_TIMEOUT_SECONDS (408), answers a multipart body cut before its closing boundary with
400 `incomplete_multipart`, and logs a client that leaves mid-upload as 499. The body is never held in memory here:
Starlette's multipart parser spools file parts to a temporary file.

`decode_audio` uses PyAV directly (through `whisper_common.audio_stream`, which decodes block by block). It does not call
faster_whisper.decode_audio, whose trailing gc.collect() costs ~0.3 s per request in a process full of objects (a model,
a web framework).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whisper_common.audio_stream import SAMPLE_RATE, AudioStream
from whisper_common.errors import (
    IncompleteMultipart,
    UploadStalled,
    UploadTooLarge,
    client_disconnected_response,
    error_response,
)

__all__ = ["SAMPLE_RATE", "DecodedAudio", "UploadLimitMiddleware", "decode_audio"]
logger = logging.getLogger("whisper_common.uploads")


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
    """Decode any audio FFmpeg reads into mono float32 at `sample_rate`, all of it at once (short clips: a reference
    voice, a fixture). A recording of any length goes through `whisper_common.audio_stream.AudioStream` instead.

    Raises EmptyAudio (0 bytes / 0 samples), AudioDecodeError (not audio, no audio stream), TruncatedAudio (the
    header declares noticeably more audio than the file holds) and AudioTooLong (over `max_seconds`, 0 = no limit).
    """
    with AudioStream(source, max_seconds=max_seconds, sample_rate=sample_rate, block_seconds=60) as stream:
        blocks = list(stream.blocks())
    return DecodedAudio(blocks[0] if len(blocks) == 1 else np.concatenate(blocks), sample_rate)
