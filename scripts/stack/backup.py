"""`make backup`: one archive of the Docker deployment, safe while the services run and take jobs.

    PYTHONPATH=scripts python -m stack.backup [--backup-dir backups] [--include data,config,credentials,certificates]

Each service's data volume is read by a helper container of the service's own image (service_data.py): SQLite
through the online backup API, then exactly the files the snapshot's rows reference; the host's configuration,
credentials and certificates (host_files.py, as root) as the operator includes them. Everything goes into
`BACKUP_DIR/whisper-<UTC time>-<commit>.tar.gz` with a manifest (the release, each store's schema version, a SHA-256
per file), written under a temporary name and given its name only when complete (archive.py). With the stores in
PostgreSQL (JOBS_DATABASE_URL), the database is not in the archive: it says so, and docs/backup.md shows pg_dump.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from whisper_common.backup.errors import ArchiveDamaged, BackupError
from whisper_common.backup.manifest import (
    DATA_PREFIX,
    FORMAT,
    PARTS,
    SERVICE_MANIFEST,
    HostFile,
    Manifest,
    Part,
    Release,
    ServicePart,
    ServiceRecord,
)

from . import service_data
from .archive import ArchiveWriter, is_disk_full
from .host_files import HOST_MANIFEST
from .settings import ROOT
from .streams import Producer, as_root


def parse_include(text: str) -> list[Part]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in PARTS]
    if unknown or not chosen:
        raise BackupError(f"BACKUP_INCLUDE={text!r}: choose among {','.join(PARTS)} (comma-separated)")
    return [part for part in PARTS if part in chosen]


def git_release() -> Release:
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    return Release(commit=commit, dirty=bool(git("status", "--porcelain", "--untracked-files=no")))


def copy_host_files(archive: ArchiveWriter, include: list[Part], etc_dir: Path, nginx_dir: Path) -> dict[str, HostFile]:
    parts = [part for part in include if part != "data"]
    stream = Producer(as_root("stack.host_files", "read", "--include", ",".join(parts), "--etc-dir", str(etc_dir),
                            "--nginx-dir", str(nginx_dir)))
    described: dict[str, dict] = {}
    try:
        with tarfile.open(fileobj=stream.stdout, mode="r|") as tar:
            for member in tar:
                handle = tar.extractfile(member)
                if handle is None:
                    raise ArchiveDamaged(f"host files: {member.name} is not a regular file")
                if member.name == HOST_MANIFEST:
                    described = json.loads(handle.read())
                    continue
                archive.add(member.name, handle, member.size, mode=member.mode, mtime=member.mtime)
        stream.finish()
    except BaseException:
        stream.kill()
        raise
    return {name: HostFile.model_validate(item) for name, item in described.items()}


def copy_service(archive: ArchiveWriter, source: service_data.Source) -> ServiceRecord:
    service = source.service
    name = service_data.helper_name(service, "backup")
    args = [*service.store_args(), *(["--postgres"] if source.postgres else []),
            *(item for name in source.files for item in ("--file", name))]
    part = copy_part(archive, service.name, service_data.helper_command(source, name, "dump", *args),
                     on_failure=lambda: service_data.remove_helper(name))
    return ServiceRecord(container=service.container, image=source.image,
                         image_revision=service_data.image_revision(source.image), volume=source.volume, part=part)


def copy_part(archive: ArchiveWriter, service: str, command: list[str],
              on_failure: Callable[[], None] = lambda: None) -> ServicePart:
    """The tar stream of `python -m whisper_common.backup dump` (run by `command`) into the archive under
    `<service>/`, each file checked against the part's own manifest on the way."""
    stream = Producer(command, on_failure=on_failure)
    part: ServicePart | None = None
    copied = {}
    try:
        with tarfile.open(fileobj=stream.stdout, mode="r|") as tar:
            for member in tar:
                handle = tar.extractfile(member)
                if handle is None:
                    raise ArchiveDamaged(f"{service}: {member.name} is not a regular file")
                if member.name == SERVICE_MANIFEST:
                    part = ServicePart.model_validate_json(handle.read())
                    continue
                if not member.name.startswith(DATA_PREFIX):
                    raise ArchiveDamaged(f"{service}: unexpected member {member.name}")
                entry = archive.add(f"{service}/{member.name}", handle, member.size, mode=member.mode,
                                    mtime=member.mtime)
                copied[member.name.removeprefix(DATA_PREFIX)] = entry
        stream.finish()
    except tarfile.TarError as exc:
        stream.settle()
        try:
            stream.finish()
        except BackupError as failure:
            raise BackupError(f"{service}: {failure}") from None
        raise ArchiveDamaged(f"{service}: the stream from the helper container broke off ({exc})") from None
    except BackupError as exc:
        stream.kill()
        raise BackupError(f"{service}: {exc}") from None
    except BaseException:
        stream.kill()
        raise
    if part is None or copied != part.files:
        raise ArchiveDamaged(f"{service}: what the helper container sent differs from its own manifest")
    return part


def row_counts(rows: dict[str, int]) -> str:
    return ", ".join(f"{table} {count}" for table, count in sorted(rows.items(), key=lambda item: -item[1])
                     if count) or "empty"


def summary(name: str, record: ServiceRecord, source: service_data.Source) -> str:
    part = record.part
    stores = ", ".join(f"{state.file} ({state.store} schema v{state.version}: {row_counts(state.rows)})"
                       for state in part.stores) or "no SQLite store"
    size = sum(entry.size for entry in part.files.values()) / 1e6
    line = (f"{name}: {source.describe()}: {stores}; {len(part.files)} files, {size:.1f} MB; "
            f"{len(part.missing)} referenced files already gone")
    if part.not_backed_up:
        line += f"; not in the archive (no store of this release claims them): {', '.join(part.not_backed_up)}"
    return line


def run(args: argparse.Namespace) -> Path:
    include = parse_include(args.include)
    release = git_release()
    now = datetime.now(timezone.utc)
    name = f"whisper-{now:%Y%m%dT%H%M%SZ}-{release.commit[:12]}.tar.gz"
    notes: list[str] = []
    services: dict[str, ServiceRecord] = {}
    host: dict[str, HostFile] = {}
    with ArchiveWriter(args.backup_dir, name) as archive:
        if any(part != "data" for part in include):
            host = copy_host_files(archive, include, args.etc_dir, args.nginx_dir)
            print(f"host: {len(host)} files ({', '.join(p for p in include if p != 'data')})")
        if "data" in include:
            for service in service_data.SERVICES:
                source = service_data.locate(service)
                if source is None:
                    notes.append(f"{service.name}: no container {service.container} and no data volume: not backed up")
                    print(notes[-1])
                    continue
                record = copy_service(archive, source)
                services[service.name] = record
                print(summary(service.name, record, source))
                if source.postgres:
                    notes.append(
                        f"{service.name}: its jobs (and live sessions) are in PostgreSQL (JOBS_DATABASE_URL) and are NOT "
                        "in this archive, only their files: back the database up with pg_dump first (docs/backup.md)"
                    )
            if not services:
                raise BackupError("neither faster-whisper nor whisperx has a container or a data volume on this Docker "
                                  "Engine: nothing to back up (is this the deployment's host?)")
        manifest = Manifest(format=FORMAT, created_at=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
                            release=release, include=include, services=services, host=host,
                            files=dict(archive.files), notes=notes)
        path = archive.complete(manifest)
    for note in notes:
        if "PostgreSQL" in note:
            print(f"NOTE: {note}")
    size = path.stat().st_size / 1e6
    print(f"backup: {_shown(path)} ({size:.1f} MB, {len(manifest.files)} files; {', '.join(include)}; release "
          f"{release.commit[:12]}{' with local changes' if release.dirty else ''})")
    return path


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.backup", description=__doc__.split("\n")[0])
    parser.add_argument("--backup-dir", type=Path, default=ROOT / "backups")
    parser.add_argument("--include", default=",".join(PARTS), help="comma-separated: " + ",".join(PARTS))
    parser.add_argument("--etc-dir", type=Path, default=Path("/etc/whisper-platform"))
    parser.add_argument("--nginx-dir", type=Path, default=Path("/etc/nginx"))
    args = parser.parse_args(argv)
    try:
        run(args)
    except Exception as exc:  # noqa: BLE001 - every failure is one line, and no archive
        if is_disk_full(exc):
            message = (f"no space left in {args.backup_dir} (BACKUP_DIR): the unfinished archive was removed; older "
                       "archives are untouched. Free space there, or set BACKUP_DIR to a disk with room")
        elif isinstance(exc, (BackupError, RuntimeError, OSError, subprocess.SubprocessError)):
            message = f"{exc}: no archive was written"
        else:
            raise
        print(f"make backup: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
