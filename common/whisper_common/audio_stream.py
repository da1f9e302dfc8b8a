"""Audio decoded as it is read: any file FFmpeg reads (a stored upload, a job's audio) as blocks of 16 kHz mono
float32, so a recording of hours is never in memory at once.

    with AudioStream(path_or_file, max_seconds=settings.max_audio_seconds) as stream:   # fails here when not audio
        for block in stream.blocks():                                                   # ~block_seconds each
            ...

What can be known before the first sample (an empty file, a WAV whose header promises more than the file holds, not
audio, no audio stream, a declared duration over the limit) raises in the constructor; what is only found while
decoding (too long, truncated, a file that stops decoding) raises from `blocks()` where it is found, after the blocks
before it. Samples are FFmpeg's s16 divided by 32768, as faster-whisper decodes them, so a transcript made from these
blocks equals one made by faster-whisper itself.
"""
from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from types import TracebackType
from typing import BinaryIO

import av
import numpy as np

from whisper_common.errors import AudioDecodeError, AudioTooLong, EmptyAudio, TruncatedAudio

SAMPLE_RATE = 16_000
TRUNCATION_TOLERANCE = 0.9
_MAX_BAD_PACKETS = 100


class AudioStream:
    """One file's audio, decoded block by block (iterate `blocks()` once)."""

    def __init__(
        self,
        source: BinaryIO | str,
        *,
        max_seconds: float = 0,
        sample_rate: int = SAMPLE_RATE,
        block_seconds: float = 5.0,
    ) -> None:
        if _is_empty(source):
            raise EmptyAudio()
        check_riff_data_size(source)
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self._block_samples = max(1, int(block_seconds * sample_rate))
        self._decoded = 0
        try:
            self._container = av.open(source, mode="r", metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise AudioDecodeError(f"the uploaded file is not audio FFmpeg can read ({_reason(exc)})") from None
        try:
            if not self._container.streams.audio:
                raise AudioDecodeError("the uploaded file has no audio stream")
            self._stream = self._container.streams.audio[0]
            self.declared_seconds = _declared_seconds(self._container, self._stream)
            if max_seconds and self.declared_seconds is not None and self.declared_seconds > max_seconds + 1:
                raise AudioTooLong(self.declared_seconds, max_seconds)
        except BaseException:
            self._container.close()
            raise

    @property
    def decoded_seconds(self) -> float:
        return self._decoded / self.sample_rate

    def blocks(self) -> Iterator[np.ndarray]:
        """float32 blocks of about `block_seconds` (the last one shorter); raises where decoding fails."""
        pending: list[np.ndarray] = []
        pending_size = 0
        limit = math.floor(self.max_seconds * self.sample_rate) if self.max_seconds else None
        errors = 0
        for chunk in self._s16_chunks():
            if isinstance(chunk, int):
                errors = chunk
                continue
            pending.append(chunk)
            pending_size += chunk.size
            self._decoded += chunk.size
            if limit is not None and self._decoded > limit:
                raise AudioTooLong(self.decoded_seconds, self.max_seconds)
            if pending_size >= self._block_samples:
                yield _as_float(pending)
                pending, pending_size = [], 0
        if pending_size:
            yield _as_float(pending)
        self._check_end(errors)

    def _s16_chunks(self) -> Iterator[np.ndarray | int]:
        """Resampled s16 arrays; an int is the count of undecodable packets so far (after the last array)."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=self.sample_rate)
        frames = self._container.decode(self._stream)
        errors = 0
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.InvalidDataError:
                errors += 1
                if errors > _MAX_BAD_PACKETS:
                    break
                continue
            except av.error.FFmpegError:
                errors += 1
                break
            for resampled in resampler.resample(frame):
                yield resampled.to_ndarray().reshape(-1)
        for resampled in resampler.resample(None):
            yield resampled.to_ndarray().reshape(-1)
        yield errors

    def _check_end(self, decode_errors: int) -> None:
        if self._decoded == 0:
            if decode_errors:
                raise AudioDecodeError("the uploaded file could not be decoded as audio (no decodable frame)")
            raise EmptyAudio("the uploaded audio has no samples (0 seconds)")
        declared = self.declared_seconds
        seconds = self.decoded_seconds
        if declared is not None and declared > 0.5 and seconds < declared * TRUNCATION_TOLERANCE:
            raise TruncatedAudio(
                f"the uploaded audio is truncated: its header declares {declared:.2f} s but only "
                f"{seconds:.2f} s could be decoded"
            )

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _as_float(chunks: list[np.ndarray]) -> np.ndarray:
    joined = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return joined.astype(np.float32) / 32768.0


_RIFF_HEADER = 12
_CHUNK_HEADER = 8
_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)  # what streaming writers (FFmpeg to a pipe, arecord) put before they know


def check_riff_data_size(source: BinaryIO | str) -> None:
    """TruncatedAudio when a WAV's `data` chunk declares more bytes than the file holds.

    FFmpeg's WAV reader caps the declared duration at the file size, so the decoded-vs-declared comparison cannot
    see a cut WAV: the header itself must be read."""
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
            if chunk_size not in _UNKNOWN_DATA_SIZES and present < chunk_size * TRUNCATION_TOLERANCE:
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
