"""The keys file: JSON, one entry per key, never the key itself (its SHA-256), written atomically (a temporary file
renamed over the old one, mode 0600) under a lock so two edits at once do not lose one.

    {"version": 1, "keys": [{"id": "key_3f9a0c1b", "name": "team-a", "role": "user",
                             "sha256": "<64 hex>", "hint": "…x7Qa", "created_at": "2025-01-01T00:00:00Z",
                             "revoked_at": null,
                             "quota": {"max_concurrent_requests": 2, "max_active_jobs": null, "audio_hours_per_day": 5}}]}

A key is `wsk_` and 43 characters of `secrets.token_urlsafe(32)` (256 bits): SHA-256 of it cannot be reversed nor
guessed, so the file holds no secret a reader could use. Several keys may share a name (rotation: add the new key,
move the clients, revoke the old one by its id).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from whisper_common.owners import OWNER_NAME, Quota, Role

KEY_PREFIX = "wsk_"
FORMAT_VERSION = 1


class KeysFileError(Exception):
    """The keys file cannot be used; the message says why in one line."""


class QuotaModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_concurrent_requests: int | None = Field(None, ge=0, le=10_000)
    max_active_jobs: int | None = Field(None, ge=0, le=1_000_000)
    audio_hours_per_day: float | None = Field(None, ge=0, le=1_000_000)

    def value(self) -> Quota:
        return Quota(self.max_concurrent_requests, self.max_active_jobs, self.audio_hours_per_day)


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=r"^key_[0-9a-f]{8,32}$")]
    name: Annotated[str, StringConstraints(pattern=f"^{OWNER_NAME.pattern}$")]
    role: Role = Role.USER
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    hint: str = Field("", max_length=16)
    created_at: str = ""
    revoked_at: str | None = None
    quota: QuotaModel = Field(default_factory=QuotaModel)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeysDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(FORMAT_VERSION, ge=1, le=FORMAT_VERSION)
    keys: list[KeyEntry] = Field(default_factory=list)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def legacy_owner_name(key: str) -> str:
    """The owner of a key listed in API_KEYS: named by a short hash of it (never the key), so two keys are two owners."""
    return f"key-{hash_key(key)[:12]}"


def read_keys(path: Path) -> list[KeyEntry]:
    """Every entry of the file (revoked ones too). KeysFileError with a one-line reason when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeysFileError(f"{path} does not exist (create it with `python -m whisper_common.keys add NAME`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"{path} cannot be read: {exc}") from None
    try:
        document = KeysDocument.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "the file"
        raise KeysFileError(f"{path} is not a valid keys file: {where}: {first.get('msg', 'invalid')}") from None
    ids = [entry.id for entry in document.keys]
    if len(ids) != len(set(ids)):
        raise KeysFileError(f"{path} is not a valid keys file: two keys share an id")
    return document.keys


def write_keys(path: Path, entries: list[KeyEntry]) -> None:
    """Replace the file at once: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = KeysDocument(keys=entries).model_dump_json(indent=2) + "\n"
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(document)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[list[KeyEntry]]:
    """The file's entries, held under an exclusive lock (a `.lock` file beside it) until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield read_keys(path) if path.exists() else []


def add_key(path: Path, name: str, role: Role = Role.USER, quota: Quota | None = None) -> tuple[str, KeyEntry]:
    """A new key for `name`; returns the key (shown once, never stored) and its entry."""
    if not OWNER_NAME.fullmatch(name):
        raise KeysFileError(
            f"invalid name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit"
        )
    quota = quota or Quota()
    key = new_key()
    entry = KeyEntry(
        id=f"key_{secrets.token_hex(4)}", name=name, role=role, sha256=hash_key(key), hint=key[-4:],
        created_at=_now(),
        quota=QuotaModel(max_concurrent_requests=quota.max_concurrent_requests,
                         max_active_jobs=quota.max_active_jobs, audio_hours_per_day=quota.audio_hours_per_day),
    )
    with locked(path) as entries:
        write_keys(path, [*entries, entry])
    return key, entry


def revoke_keys(path: Path, name_or_id: str) -> list[KeyEntry]:
    """Revoke the key with this id, or every active key of this name; returns the entries revoked (none: nothing
    matched, the file is left as it was)."""
    with locked(path) as entries:
        matched = [e for e in entries if e.active and (e.id == name_or_id or e.name == name_or_id)]
        if not matched:
            return []
        now = _now()
        revoked_ids = {entry.id for entry in matched}
        updated = [e.model_copy(update={"revoked_at": now}) if e.id in revoked_ids else e for e in entries]
        write_keys(path, updated)
    return [entry for entry in updated if entry.id in revoked_ids]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
