"""The restore side inside a service's container, in three steps so that several volumes change together or not at all:

- `check`: refuses, before anything is written, a part this release cannot run (a newer schema), a volume that holds
  data (unless `replace`), and a volume with less free space than the data needs;
- `stage`: writes the part into `DATA_DIR/.restore-staging/`, each file checked against its SHA-256 as it arrives,
  every file of the manifest required, the databases opened with their schemas (`open_database`: the way the service
  opens them, migrations included); on any failure the staging folder is removed and DATA_DIR is as it was;
- `commit`: moves what DATA_DIR held aside (`.restore-replaced/`), the staged entries into place, then deletes the old
  ones. Renames within one volume: nothing is copied and nothing can run out of space.
"""
from __future__ import annotations

import errno
import os
import shutil
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from whisper_common.backup.errors import ArchiveDamaged, BackupError, DataPresent, NotEnoughSpace
from whisper_common.backup.manifest import (
    CHUNK,
    DATA_PREFIX,
    SERVICE_MANIFEST,
    HashingReader,
    ServicePart,
    check_schemas,
    safe_relative,
    verify_entry,
)
from whisper_common.backup.stores import StoreSpec, schemas_of
from whisper_common.db import StorageFull, open_database

STAGING = ".restore-staging"
REPLACED = ".restore-replaced"
SPACE_MARGIN_BYTES = 16 << 20
"""Room beyond the files themselves: the WAL and journal of the databases opened after staging."""
_OURS = {STAGING, REPLACED, "lost+found"}


def present(data_dir: Path) -> list[str]:
    """What DATA_DIR holds, leaving out the empty skeleton a service makes (`jobs/` with an empty `.incoming/`)."""
    if not data_dir.is_dir():
        return []
    held = []
    for entry in sorted(data_dir.iterdir()):
        if entry.name in _OURS:
            continue
        if entry.name == "jobs" and entry.is_dir() and _empty_tree(entry):
            continue
        held.append(entry.name + ("/" if entry.is_dir() else ""))
    return held


def _empty_tree(directory: Path) -> bool:
    return all(path.is_dir() for path in directory.rglob("*"))


def check(data_dir: Path, part: ServicePart, specs: list[StoreSpec], *, replace: bool, release: str = "") -> list[str]:
    warnings = check_schemas(part.stores, schemas_of(specs), release)
    if not data_dir.is_dir() or not os.access(data_dir, os.W_OK | os.X_OK):
        raise BackupError(f"{data_dir} is not a folder this process (uid {os.getuid()}) can write: nothing was restored")
    held = present(data_dir)
    if held and not replace:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise DataPresent(
            f"the data volume already holds data ({shown}): nothing was restored; REPLACE=1 replaces it with the "
            "archive's (take a backup of it first)"
        )
    staged = data_dir / STAGING
    free = shutil.disk_usage(data_dir).free + (_size(staged) if staged.is_dir() else 0)
    needed = part.bytes_needed() + SPACE_MARGIN_BYTES
    if free < needed:
        raise NotEnoughSpace(
            f"the data volume has {_mb(free)} free and the archive's data needs {_mb(needed)}: nothing was restored; "
            "free space on the disk that holds Docker's volumes"
        )
    return warnings


def stage(data_dir: Path, specs: list[StoreSpec], stream: IO[bytes], *, replace: bool,
          params: Mapping[str, str] | None = None) -> tuple[ServicePart, list[str]]:
    """The tar stream's `service.json`, then its `data/` members, into the staging folder; returns the part and the
    check's warnings."""
    staging = data_dir / STAGING
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            members = iter(tar)
            first = next(members, None)
            if first is None or first.name != SERVICE_MANIFEST or not first.isfile():
                raise ArchiveDamaged(f"the restore stream does not begin with {SERVICE_MANIFEST}")
            part = ServicePart.model_validate_json(_read(tar, first))
            warnings = check(data_dir, part, specs, replace=replace)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            _receive(tar, members, part, staging)
        os.sync()
        stores = {spec.schema.store: spec for spec in specs}
        for state in part.stores:
            try:
                db = open_database(staging / state.file, stores[state.store].schema, params=params)
            except StorageFull:
                raise OSError(errno.ENOSPC, "no space left to open the restored database") from None
            db.close()
    except (tarfile.TarError, EOFError, ValidationError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveDamaged(f"the restore stream is damaged or cut short ({exc}): nothing was restored") from None
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NotEnoughSpace("the data volume ran out of space while the archive was written into it: nothing "
                                 "was restored; free space on the disk that holds Docker's volumes") from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return part, warnings


def _receive(tar: tarfile.TarFile, members: Iterator[tarfile.TarInfo], part: ServicePart, staging: Path) -> None:
    seen: set[str] = set()
    for member in members:
        if not member.name.startswith(DATA_PREFIX) or not member.isfile():
            raise ArchiveDamaged(f"unexpected member {member.name!r} in the restore stream")
        relative = safe_relative(member.name[len(DATA_PREFIX):])
        if relative in seen:
            raise ArchiveDamaged(f"{relative} is in the archive twice")
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None  # a regular file
        reader = HashingReader(source)
        with target.open("xb") as out:
            shutil.copyfileobj(reader, out, CHUNK)  # type: ignore[misc]
            os.fchmod(out.fileno(), member.mode & 0o777)  # as it was: the keys file 0600, the rest as written
        verify_entry(relative, part.files.get(relative), reader.entry())
        seen.add(relative)
    absent = sorted(set(part.files) - seen)
    if absent:
        raise ArchiveDamaged(f"{len(absent)} file(s) of the manifest are not in the archive (e.g. {absent[0]})")


def commit(data_dir: Path, *, replace: bool) -> list[str]:
    """The staged data into place; returns what it replaced."""
    staging = data_dir / STAGING
    if not staging.is_dir():
        raise BackupError(f"nothing is staged in {staging}: run the restore again")
    held = present(data_dir)
    if held and not replace:
        raise DataPresent(f"the data volume holds data again ({', '.join(held[:5])}): nothing was replaced")
    replaced = data_dir / REPLACED
    shutil.rmtree(replaced, ignore_errors=True)
    replaced.mkdir()
    for entry in sorted(data_dir.iterdir()):
        if entry.name not in _OURS:
            entry.rename(replaced / entry.name)
    for entry in sorted(staging.iterdir()):
        entry.rename(data_dir / entry.name)
    staging.rmdir()
    os.sync()
    shutil.rmtree(replaced)
    return held


def abort(data_dir: Path) -> None:
    shutil.rmtree(data_dir / STAGING, ignore_errors=True)


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read()


def _size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
