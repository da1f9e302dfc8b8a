"""The basic-auth user of the local stack: from the environment, or generated once and kept in a 0600 file."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

USER_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CredentialsError(ValueError):
    """A user name or password that cannot be used for basic auth."""


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    # Where the plaintext is kept (None when it came from the environment, which the user already has).
    stored_at: Path | None
    generated: bool

    def __repr__(self) -> str:  # never show the password in a traceback or log
        return f"Credentials(user={self.user!r}, password=***, stored_at={self.stored_at})"


def ensure_credentials(store: Path, user: str | None, password: str | None) -> Credentials:
    """Environment first; else the stored pair; else a new random password for user `whisper`, stored 0600."""
    if password:
        credentials = Credentials(user or "whisper", password, None, False)
    elif store.is_file():
        stored_user, _, stored_password = store.read_text().strip().partition(":")
        credentials = Credentials(stored_user, stored_password, store, False)
    else:
        credentials = Credentials(user or "whisper", secrets.token_urlsafe(18), store, True)
        store.parent.mkdir(parents=True, exist_ok=True)
        store.touch(mode=0o600)
        store.write_text(f"{credentials.user}:{credentials.password}\n")
    if not USER_NAME.match(credentials.user):
        raise CredentialsError(f"user name must match {USER_NAME.pattern}: {credentials.user!r}")
    if ":" in credentials.user or "\n" in credentials.password:
        raise CredentialsError("the password must be a single line")
    return credentials


def write_htpasswd(path: Path, credentials: Credentials) -> None:
    """One `user:hash` line; SHA-512 crypt, which nginx checks through the system's crypt()."""
    # The password goes through stdin: never in a command line other users can read in `ps`.
    result = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"], input=credentials.password + "\n", capture_output=True, text=True
    )
    if result.returncode != 0:
        raise CredentialsError(f"openssl passwd failed: {result.stderr.strip()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(f"{credentials.user}:{result.stdout.strip()}\n")
    os.replace(tmp, path)
