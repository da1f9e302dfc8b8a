"""The backup side inside a service's container: DATA_DIR as a tar stream (`data/<path>` members, then `service.json`).

SQLite stores first, each through the online backup API, then exactly the files the snapshots' rows reference. A job's
audio is on disk under its name before its row commits (jobs/files.py), so every file a snapshot references existed
when the snapshot was taken; one removed since (a job deleted, or past JOB_RETENTION) is listed as missing, which is
no error. Files arriving after the snapshot belong to rows it does not hold and are left out. `files` names plain
files of DATA_DIR that no store claims but the service needs, archived as they are: the API keys file (API_KEYS_FILE)
when it lies in the volume, so that a restore gives back working keys.

With the stores in PostgreSQL (`postgres`), the rows are not here: every job file in DATA_DIR is archived, and the
database is for pg_dump (docs/backup.md).
"""
from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from whisper_common.backup.manifest import DATA_PREFIX, SERVICE_MANIFEST, FileEntry, HashingReader, ServicePart
from whisper_common.backup.snapshot import describe, snapshot
from whisper_common.backup.stores import StoreSpec

JOBS_DIR = "jobs"
INCOMING = ".incoming"
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
IGNORED = {"lost+found", ".restore-staging", ".restore-replaced"}


def dump(data_dir: Path, specs: list[StoreSpec], out: IO[bytes], *, postgres: bool = False,
         work_dir: Path | None = None, files: Sequence[str] = ()) -> ServicePart:
    part = ServicePart(database="postgresql" if postgres else "sqlite")
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="whisper-backup-") as scratch, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        referenced: set[str] = set()
        if postgres:
            referenced = set(_job_files(data_dir))
        else:
            for spec in specs:
                source = data_dir / spec.file
                if not source.is_file():
                    continue
                copy = Path(scratch) / spec.file
                snapshot(source, copy)
                state, rows_files = describe(copy, spec)
                part.stores.append(state)
                referenced.update(rows_files)
                with copy.open("rb") as handle:
                    part.files[spec.file] = _add(tar, spec.file, handle)
                copy.unlink()
        for relative in sorted(referenced | {str(PurePosixPath(name)) for name in files}):
            try:
                handle = (data_dir / relative).open("rb")
            except FileNotFoundError:
                part.missing.append(relative)
                continue
            with handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    part.missing.append(relative)
                    continue
                part.files[relative] = _add(tar, relative, handle)
        part.not_backed_up = _unclaimed(data_dir, specs, postgres, files)
        body = part.model_dump_json(indent=2).encode()
        info = tarfile.TarInfo(SERVICE_MANIFEST)
        info.size, info.mtime, info.mode = len(body), int(time.time()), 0o600
        tar.addfile(info, io.BytesIO(body))
    return part


def _add(tar: tarfile.TarFile, relative: str, handle: IO[bytes]) -> FileEntry:
    status = os.fstat(handle.fileno())
    info = tarfile.TarInfo(DATA_PREFIX + relative)
    info.size, info.mtime, info.mode = status.st_size, int(status.st_mtime), stat.S_IMODE(status.st_mode)
    reader = HashingReader(handle)
    tar.addfile(info, reader)  # reads exactly info.size bytes; a file that shrank meanwhile fails here
    return reader.entry()


def _job_files(data_dir: Path) -> list[str]:
    root = data_dir / JOBS_DIR
    if not root.is_dir():
        return []
    found = []
    for job in sorted(root.iterdir()):
        if job.name == INCOMING or not job.is_dir():
            continue
        found += [str(path.relative_to(data_dir)) for path in sorted(job.rglob("*")) if path.is_file()]
    return found


def _unclaimed(data_dir: Path, specs: list[StoreSpec], postgres: bool, files: Sequence[str]) -> list[str]:
    claimed = {JOBS_DIR, *IGNORED, *(PurePosixPath(name).parts[0] for name in files)}
    if not postgres:
        claimed |= {spec.file + suffix for spec in specs for suffix in ("", *SQLITE_COMPANIONS)}
    if not data_dir.is_dir():
        return []
    return sorted(entry.name for entry in data_dir.iterdir() if entry.name not in claimed)
