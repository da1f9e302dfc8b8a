"""What a running proxy says about itself on `/_autostart/health`, so that `make up` can tell whether it must do
anything: the code it runs (a fingerprint of its package and of the installed distributions), the config file it has
in force (a digest of the file's bytes), its pid and where its socket came from.

`autostart --fingerprint` prints the fingerprint of the code on disk; `make up` restarts (hands over) the proxy only
when that differs from the running one's, and reloads it (SIGHUP) only when the config file's digest differs.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def code_fingerprint() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    versions = sorted({f"{(dist.metadata['Name'] or '').lower()}=={dist.version}"
                       for dist in importlib.metadata.distributions()})
    digest.update("\n".join(versions).encode())
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
