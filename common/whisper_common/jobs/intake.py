"""A job's request body, taken in without holding it in memory: the multipart form is parsed as it streams, the file
part written straight into DATA_DIR (hashed on the way, for Idempotency-Key), the other fields kept as strings.

    intake = await receive_multipart(request, files.incoming)
    intake.fields        # {"model": ["tiny.en"], "timestamp_granularities[]": ["word", "segment"], ...}
    intake.file          # the stored upload (a temporary name; JobFiles.adopt moves it to the job), or None

A disk that fills while the body arrives is an InsufficientStorage (507) and the partial file is removed.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from whisper_common.errors import InvalidParameter
from whisper_common.jobs.errors import InsufficientStorage, storage_full

_WRITE_CHUNK = 1 << 20
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 100


@dataclass
class Intake:
    fields: dict[str, list[str]] = field(default_factory=dict)
    file: Path | None = None
    file_sha256: str = ""
    file_bytes: int = 0

    def discard(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)
            self.file = None


class _FileSink:
    """Appends to a new file under `directory`; its blocking writes run in a thread, a megabyte at a time."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"upload-{uuid.uuid4().hex}"
        self._handle = open(self.path, "xb")  # noqa: SIM115 - closed in finish/abort
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self.size = 0

    async def add(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= _WRITE_CHUNK:
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        chunk, self._buffer = bytes(self._buffer), bytearray()
        self.size += len(chunk)
        await asyncio.to_thread(self._write, chunk)

    def _write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._handle.write(chunk)

    async def finish(self) -> str:
        await self.flush()
        await asyncio.to_thread(self._close_synced)
        return self._hash.hexdigest()

    def _close_synced(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())  # a 202 means the audio is on disk, whatever happens next
        self._handle.close()

    def abort(self) -> None:
        self._handle.close()
        self.path.unlink(missing_ok=True)


def check_free_space(directory: Path, needed: int) -> None:
    if needed > 0 and shutil.disk_usage(directory).free < needed:
        raise InsufficientStorage(
            f"the server has no space for this upload ({needed / 2**20:.1f} MiB); nothing was kept"
        )


async def receive_multipart(request: Request, directory: Path) -> Intake:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidParameter("file", "send multipart/form-data with a 'file' part, or JSON with 'audio_url'")
    declared = int(request.headers.get("content-length") or 0)
    check_free_space(directory, declared)

    intake = Intake()
    state: dict[str, bytes] = {"header": b"", "value": b""}
    headers: dict[bytes, bytes] = {}
    sink: _FileSink | None = None
    events: list[tuple[str, object]] = []

    def on_part_begin() -> None:
        headers.clear()
        events.append(("begin", None))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        headers[state["header"].lower()] = state["value"]
        state["header"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        events.append(("headers", disposition))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        events.append(("data", data[start:end]))

    def on_part_end() -> None:
        events.append(("end", None))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    name: str | None = None
    in_file = False
    value = bytearray()
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            parser.write(chunk)
            for kind, payload in events:
                if kind == "headers":
                    disposition: dict[bytes, bytes] = payload  # type: ignore[assignment]
                    name = disposition.get(b"name", b"").decode("utf-8", "replace")
                    in_file = b"filename" in disposition
                    value = bytearray()
                    if in_file:
                        if name != "file":
                            raise InvalidParameter(name or "file", "only one file part, named 'file', is accepted")
                        if sink is not None:
                            raise InvalidParameter("file", "send one file per job")
                        sink = _FileSink(directory)
                elif kind == "data":
                    data: bytes = payload  # type: ignore[assignment]
                    if in_file:
                        assert sink is not None
                        await sink.add(data)
                    else:
                        value += data
                        if len(value) > MAX_FIELD_BYTES:
                            raise InvalidParameter(name or "form", f"form field '{name}' is longer than 64 KiB")
                elif kind == "end" and not in_file and name is not None:
                    intake.fields.setdefault(name, []).append(value.decode("utf-8", "replace"))
                    if sum(len(values) for values in intake.fields.values()) > MAX_FIELDS:
                        raise InvalidParameter(name, "too many form fields")
            events.clear()
        parser.finalize()
        if sink is not None:
            intake.file_sha256 = await sink.finish()
            intake.file_bytes = sink.size
            intake.file = sink.path
    except OSError as exc:
        if sink is not None:
            sink.abort()
        if storage_full(exc):
            raise InsufficientStorage() from None
        raise
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    return intake
