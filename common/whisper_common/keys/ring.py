"""The keys a running service accepts: those of API_KEYS_FILE (re-read within a second of a change, without a restart)
and those of API_KEYS (each its own owner, named by a short hash of the key).

    ring = KeyRing(settings.api_keys, settings.api_keys_file)
    owner = ring.lookup(presented)        # the key's Owner, or None

A presented key is hashed (SHA-256) and the hash looked up among the accepted ones, then compared in constant time:
the time taken depends on that hash alone, which nobody can steer towards a stored one without the key, never on how
much of a stored key the presented one shares (so it stays flat whether 1 or 10,000 keys are accepted). A keys file that does not
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
        self._by_digest: dict[bytes, tuple[bytes, Owner]] = {}
        self._index()
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
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found[0], digest):
            return None
        return found[1]

    def owners(self) -> list[Owner]:
        return [owner for _, owner in self._accepted]

    def _index(self) -> None:
        self._by_digest = {digest: (digest, owner) for digest, owner in self._accepted}

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
                self._index()
                self.last_error = None
                logger.info("API keys loaded", extra={"file": str(self.path), "keys": len(self._from_file)})
                return
        if reason != self.last_error:
            kept = "keeping the last good set" if self._from_file else "no key of the file is accepted"
            level = logging.WARNING if stamp is None and not self._from_file else logging.ERROR  # none yet: not broken
            logger.log(level, f"API keys file not used ({kept}): {reason}")
        self.last_error = reason
