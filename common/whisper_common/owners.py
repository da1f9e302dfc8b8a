"""Who is calling: the `Owner` value every store filters by, resolved once at the edge of a service (`auth`) and handed
down to the code that reads or writes stored data.

    owner = owner_of(request)                       # in a route (or a WebSocket handler)
    rows = store.list(owner, ...)                   # the store filters in its query:
    p = Params()
    where = [f"queue = {p(queue)}", owner_filter(p, owner)]  # `owner = $2` for a user, nothing for an admin

An owner is a name (a named key's, an edge user's, or `key-<hash>` for a key of API_KEYS) and a role: a `user` sees
only what it made, an `admin` sees everyone's. A row that belongs to someone else is answered exactly like a row that
does not exist (404): existence is not revealed. Without any authentication configured every caller is `ANONYMOUS`,
an admin, so an open service behaves as before owners existed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from starlette.requests import HTTPConnection
from starlette.types import Scope

OWNER_SCOPE_KEY = "whisper.owner"
"""Where the auth middleware puts the caller's Owner in the ASGI scope."""
OWNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""What an owner may be called: it reaches logs, metric labels and SQL parameters, never SQL text."""


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class Quota:
    """An owner's limits; None means the global default (QUOTA__*), 0 means none."""

    max_concurrent_requests: int | None = None
    """Synchronous transcriptions, translations and live sessions at once."""
    max_active_jobs: int | None = None
    """Jobs queued or running at once."""
    audio_hours_per_day: float | None = None
    """Hours of audio per UTC day (requests, jobs and live sessions together)."""


@dataclass(frozen=True)
class Owner:
    name: str
    role: Role = Role.USER
    quota: Quota = field(default_factory=Quota)
    source: str = "key"
    """How it was resolved: `key`, `edge` (a user the proxy in front authenticated) or `open` (no authentication)."""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def sees(self, owner_name: str) -> bool:
        """Whether a row owned by `owner_name` is this caller's to see."""
        return self.is_admin or owner_name == self.name


ANONYMOUS = Owner("anonymous", Role.ADMIN, source="open")
"""The caller of a service without any authentication configured: it may do anything, as before owners existed."""


class ParamSink(Protocol):
    def __call__(self, value: object) -> str: ...


def owner_filter(p: ParamSink, owner: Owner, column: str = "owner") -> str:
    """The SQL condition that keeps `owner` to its own rows: `<column> = $n`, or `1 = 1` for an admin. `p` is the
    query's `whisper_common.db.Params`; `column` is SQL text written by the store (never a user's input)."""
    if owner.is_admin:
        return "1 = 1"
    return f"{column} = {p(owner.name)}"


def valid_owner_name(name: str) -> bool:
    return OWNER_NAME.fullmatch(name) is not None


def owner_of(connection: HTTPConnection | Scope) -> Owner:
    """The caller of a request or WebSocket, as the auth middleware resolved it. An app built without that middleware
    (none of the services) is a programming error: it raises rather than serve data to nobody in particular."""
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    owner = scope.get(OWNER_SCOPE_KEY)
    if not isinstance(owner, Owner):
        raise RuntimeError("no owner on this request: the app was built without whisper_common.auth")
    return owner
