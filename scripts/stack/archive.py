"""The archive file of `make backup` (the layout: whisper_common/backup/manifest.py).

Written under a hidden temporary name (`.whisper-….tar.gz.partial`, mode 0600), fsynced, and linked to its final
name only when complete, so a full disk or a crash never leaves a half archive that looks whole, and an existing
archive is never overwritten. Read back by `make restore` twice: `verify` reads it completely and checks every member
against the manifest before anything is written, `members` hands the members out for writing.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import tarfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from pydantic import ValidationError

from whisper_common.backup.errors import ArchiveDamaged, NotEnoughSpace
from whisper_common.backup.manifest import (
    CHUNK,
    MANIFEST,
    FileEntry,
    HashingReader,
    Manifest,
    check_format,
    safe_relative,
    verify_entry,
)

COMPRESS_LEVEL = 6
"""gzip's own default: level 9 costs about twice the time for a few percent (audio hardly compresses)."""
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


class ArchiveWriter:
    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        self.partial = directory / f".{name}.partial"
        descriptor = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(descriptor, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w:gz", compresslevel=COMPRESS_LEVEL,
                                 format=tarfile.PAX_FORMAT)
        self.files: dict[str, FileEntry] = {}

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:
            self.discard()

    def add(self, name: str, handle: IO[bytes], size: int, *, mode: int = 0o600, mtime: float | None = None,
            owner: str = "", group: str = "") -> FileEntry:
        safe_relative(name)
        if name in self.files or name == MANIFEST:
            raise ValueError(f"{name} is in the archive already")
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode & 0o7777, int(mtime if mtime is not None else time.time())
        info.uname, info.gname = owner, group
        reader = HashingReader(handle)
        self._tar.addfile(info, reader)
        self.files[name] = entry = reader.entry()
        return entry

    @property
    def written_bytes(self) -> int:
        return self._file.tell()

    def complete(self, manifest: Manifest) -> Path:
        """Adds the manifest, makes the archive durable and gives it its name; returns the path."""
        body = manifest.model_dump_json(indent=2).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(body), 0o600, int(time.time())
        self._tar.addfile(info, io.BytesIO(body))
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._link()
        self.partial.unlink()
        _sync_directory(self.directory)
        return final

    def _link(self) -> Path:
        stem = self.name.removesuffix(".tar.gz")
        for number in range(1, 100):
            final = self.directory / (self.name if number == 1 else f"{stem}-{number}.tar.gz")
            try:
                os.link(self.partial, final)  # never replaces an existing archive
            except FileExistsError:
                continue
            return final
        raise FileExistsError(f"{self.directory / self.name} and 98 others like it exist")

    def discard(self) -> None:
        """Removes the unfinished archive (closing it may fail again on a full disk: that is ignored)."""
        for close in (self._tar.close, self._file.close):
            try:
                close()
            except (OSError, ValueError):
                pass
        self.partial.unlink(missing_ok=True)


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, NotEnoughSpace) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))


def verify(path: Path) -> Manifest:
    """Reads the whole archive, hashes every member and checks each against the manifest; nothing is written."""
    found: dict[str, FileEntry] = {}
    manifest_body: bytes | None = None
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                if member.name == MANIFEST:
                    manifest_body = _read_all(tar, member)
                    continue
                safe_relative(member.name)
                if not member.isfile():
                    raise ArchiveDamaged(f"{path}: member {member.name} is not a regular file")
                if member.name in found:
                    raise ArchiveDamaged(f"{path}: {member.name} is in the archive twice")
                reader = HashingReader(_extract(tar, member))
                while reader.read(CHUNK):
                    pass
                found[member.name] = reader.entry()
    except _READ_ERRORS as exc:
        raise ArchiveDamaged(f"{path} is damaged or cut short ({exc or type(exc).__name__}): nothing was restored") from None
    if manifest_body is None:
        raise ArchiveDamaged(f"{path} has no {MANIFEST} (an archive of a backup that did not finish?): nothing was "
                             "restored")
    manifest = parse_manifest(manifest_body, path)
    for name, entry in found.items():
        verify_entry(name, manifest.files.get(name), entry)
    absent = sorted(set(manifest.files) - set(found))
    if absent:
        raise ArchiveDamaged(f"{path} lacks {len(absent)} file(s) its manifest lists (e.g. {absent[0]}): nothing was "
                             "restored")
    return manifest


def parse_manifest(body: bytes, path: Path) -> Manifest:
    try:
        raw = json.loads(body)
        check_format(int(raw["format"]))
        return Manifest.model_validate(raw)
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise ArchiveDamaged(f"{path}: its {MANIFEST} cannot be read ({exc}): nothing was restored") from None


def members(path: Path) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    """The members after `verify`, in archive order, manifest left out; a read error is an ArchiveDamaged."""
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                if member.name != MANIFEST:
                    yield member, _extract(tar, member)
    except _READ_ERRORS as exc:
        raise ArchiveDamaged(f"{path} could not be read again ({exc}): changed since it was checked?") from None


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    handle = tar.extractfile(member)
    if handle is None:
        raise ArchiveDamaged(f"member {member.name} is not a regular file")
    return handle


def _read_all(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    return _extract(tar, member).read()
