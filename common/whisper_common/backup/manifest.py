"""What an archive records, and the checks a restore makes on it before it writes anything.

An archive (`make backup`) is a gzipped tar: the host's files under `host/`, each service's part under
`<service>/data/` (paths relative to its DATA_DIR), and `manifest.json` last. The manifest names the release (the
checkout's git commit, and each image's), the schema version of every store, and the size and SHA-256 of every
other member, so a restore can tell a whole archive from a damaged one, and one it can run from one written by a
newer release, before it changes anything.

A service's part travels on its own between the host and the service's container (`ServicePart`, as
`service.json`): at the end of a dump stream, and first in a stage stream.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import IO, Literal

from pydantic import BaseModel, Field

from whisper_common.backup.errors import ArchiveDamaged, ArchiveTooNew
from whisper_common.db import Schema

FORMAT = 1
"""The archive layout this release writes and reads; a restore refuses a larger one."""
MANIFEST = "manifest.json"
SERVICE_MANIFEST = "service.json"
DATA_PREFIX = "data/"
CHUNK = 1 << 20
Part = Literal["data", "config", "credentials", "certificates"]
PARTS: tuple[Part, ...] = ("data", "config", "credentials", "certificates")


class FileEntry(BaseModel):
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SchemaVersion(BaseModel):
    version: int = Field(ge=1)
    additive: bool


class StoreState(BaseModel):
    """One store's database as the snapshot holds it."""

    store: str
    file: str
    """Relative to DATA_DIR."""
    versions: list[SchemaVersion]
    """Rows of `whisper_schema_versions` for the store; none for a database of the release before schema versions."""
    latest_known: int
    """The newest version the release that took the backup knew."""
    rows: dict[str, int] = Field(default_factory=dict)
    """Rows per table of the store, for the operator."""

    @property
    def version(self) -> int:
        return max((item.version for item in self.versions), default=0)


class ServicePart(BaseModel):
    """One service's DATA_DIR in an archive."""

    database: Literal["sqlite", "postgresql"]
    stores: list[StoreState] = Field(default_factory=list)
    files: dict[str, FileEntry] = Field(default_factory=dict)
    """Every file of the part, relative to DATA_DIR: the snapshots and the files their rows reference."""
    missing: list[str] = Field(default_factory=list)
    """Files the rows reference that were already gone when the backup read them (e.g. removed by JOB_RETENTION)."""
    not_backed_up: list[str] = Field(default_factory=list)
    """Entries of DATA_DIR that no store of this release claims, left out (a newer release's store, a stray file)."""

    def bytes_needed(self) -> int:
        return sum(entry.size for entry in self.files.values())


class Release(BaseModel):
    commit: str
    """The checkout's git commit (`unknown` outside a git checkout)."""
    dirty: bool = False


class ServiceRecord(BaseModel):
    container: str
    image: str
    """The image id the data was read with (the container's own)."""
    image_revision: str = ""
    """Its `org.opencontainers.image.revision` label: the commit it was built from."""
    volume: str = ""
    part: ServicePart


class HostFile(BaseModel):
    part: Part
    root: Literal["etc", "nginx", "checkout"]
    """Where `relative` starts: WHISPER_ETC, NGINX_DIR or the checkout; restored under the same root of the host."""
    relative: str
    source: str
    """The absolute path it was read from."""
    mode: int
    owner: str
    group: str


class Manifest(BaseModel):
    format: int
    created_at: str
    release: Release
    include: list[Part]
    services: dict[str, ServiceRecord] = Field(default_factory=dict)
    host: dict[str, HostFile] = Field(default_factory=dict)
    """Archive member name -> where it came from."""
    files: dict[str, FileEntry] = Field(default_factory=dict)
    """Every member but the manifest itself."""
    notes: list[str] = Field(default_factory=list)


def check_format(manifest_format: int) -> None:
    if manifest_format > FORMAT:
        raise ArchiveTooNew(
            f"the archive has format {manifest_format}, written by a newer release; this release reads format {FORMAT}: "
            "restore it with the release that wrote it (its commit is in manifest.json)"
        )


def check_schemas(stores: list[StoreState], schemas: Mapping[str, Schema], release: str = "") -> list[str]:
    """Refuses a store whose schema this release cannot run on, as the database layer would at start (a version it does
    not know that was not additive); returns a warning per store that is newer by additive versions only."""
    written_by = f" (commit {release})" if release else ""
    warnings = []
    for state in stores:
        schema = schemas.get(state.store)
        if schema is None:
            raise ArchiveTooNew(
                f"the archive holds a '{state.store}' store ({state.file}) that this release does not have: it was "
                f"written by another release{written_by}; restore it with that release"
            )
        newer = sorted(item.version for item in state.versions if item.version > schema.latest)
        blocking = [item.version for item in state.versions if item.version > schema.latest and not item.additive]
        if blocking:
            raise ArchiveTooNew(
                f"the archive's {state.store} schema ({state.file}) is at version {state.version}, written by a newer "
                f"release{written_by}; this release knows versions up to {schema.latest} and cannot run on version "
                f"{min(blocking)}: restore it with that release or a newer one (git checkout <commit>; make images)"
            )
        if newer:
            warnings.append(
                f"the archive's {state.store} schema is newer than this release by additive versions only "
                f"({', '.join(map(str, newer))}): this release runs on it"
            )
    return warnings


def safe_relative(name: str) -> str:
    """A member's path relative to where it is written: no absolute path, no `..`, no empty or dot component."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\0" in name:
        raise ArchiveDamaged(f"the archive holds a member with an unsafe path: {name!r}")
    return name


class HashingReader:
    """A file object that hashes what is read through it (tarfile reads a member's bytes through `read`)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def entry(self) -> FileEntry:
        return FileEntry(size=self.size, sha256=self._hash.hexdigest())


def sha256_of(data: bytes) -> FileEntry:
    return FileEntry(size=len(data), sha256=hashlib.sha256(data).hexdigest())


def verify_entry(name: str, expected: FileEntry | None, got: FileEntry) -> None:
    if expected is None:
        raise ArchiveDamaged(f"the archive holds {name}, which its manifest does not list")
    if expected != got:
        raise ArchiveDamaged(
            f"{name} in the archive does not match its checksum (manifest: {expected.size} bytes, sha256 "
            f"{expected.sha256[:16]}…; read: {got.size} bytes, sha256 {got.sha256[:16]}…)"
        )
