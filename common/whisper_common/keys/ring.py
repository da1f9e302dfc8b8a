"""The keys a running service accepts: those of API_KEYS_FILE (re-read within a second of a change, without a restart)
and those of API_KEYS (each its own owner, named by a short hash of the key).

    ring = KeyRing(settings.api_keys, settings.api_keys_file)
    owner = ring.lookup(presented)        # the key's Owner, or None

A presented key is hashed (SHA-256) and compared with every accepted hash, in constant time and without stopping at
the first match, so the time taken says nothing about which key, or whether one, matched. A keys file that does not
parse (a half-edited file, a typo) is reported in one log line and the last good set stays in force; at start, with no
good set yet, no key of the file is accepted (the service refuses rather than opens).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from whisper_common.keys.file import KeysFileError, hash_key, legacy_owner_name, read_keys
from whisper_common.owners import Owner

logger = logging.getLogger("whisper_common.keys")

CHECK_INTERVAL_SECONDS = 1.0
Stamp = tuple[int, int, int]


class KeyRing:
    def __init__(
        self,
        legacy_keys: Sequence[str] = (),
        path: Path | None = None,
        *,
        check_interval: float = CHECK_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_interval = check_interval
        self.clock = clock
        self._legacy = [(bytes.fromhex(hash_key(key)), Owner(legacy_owner_name(key))) for key in legacy_keys if key]
        self._from_file: list[tuple[bytes, Owner]] = []
        self._accepted = list(self._legacy)
        self._stamp: Stamp | None = None
        self._checked_at = -float("inf")
        self.last_error: str | None = None
        if path is not None:
            self._reload(force=True)

    @property
    def configured(self) -> bool:
        """Keys are how callers authenticate here: some listed in API_KEYS, or a keys file (even an empty one)."""
        return bool(self._legacy) or self.path is not None

    def lookup(self, presented: str) -> Owner | None:
        if self.path is not None and self.clock() - self._checked_at >= self.check_interval:
            self._reload()
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: Owner | None = None
        for accepted, owner in self._accepted:
            if hmac.compare_digest(digest, accepted):
                found = owner
        return found

    def owners(self) -> list[Owner]:
        return [owner for _, owner in self._accepted]

    def _reload(self, force: bool = False) -> None:
        assert self.path is not None
        self._checked_at = self.clock()
        try:
            status = os.stat(self.path)
        except OSError as exc:
            stamp: Stamp | None = None
            reason = f"{self.path} cannot be read: {exc.strerror or exc}"
        else:
            stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
            reason = None
        if stamp == self._stamp and not force:
            return
        self._stamp = stamp
        if reason is None:
            try:
                entries = read_keys(self.path)
            except KeysFileError as exc:
                reason = str(exc)
            else:
                self._from_file = [(bytes.fromhex(e.sha256), Owner(e.name, e.role, e.quota.value())) for e in entries
                                   if e.active]
                self._accepted = self._legacy + self._from_file
                self.last_error = None
                logger.info("API keys loaded", extra={"file": str(self.path), "keys": len(self._from_file)})
                return
        if reason != self.last_error:
            kept = "keeping the last good set" if self._from_file else "no key of the file is accepted"
            logger.error(f"API keys file not used ({kept}): {reason}")
        self.last_error = reason
