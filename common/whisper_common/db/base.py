"""What a store sees of a database: transactions whose `execute` binds parameters and returns rows as dicts, and the
few things the two databases spell differently.

Parameters are written `$1`, `$2`, ... in the SQL text and passed as a sequence. Neither driver rewrites the text:
PostgreSQL binds `$n` itself (psycopg's `RawCursor` sends the query unchanged), and SQLite reads `$1` as a named
parameter, bound from the mapping `{"1": ...}`. So a literal `?`, `%` or `$1` inside a quoted string stays text, and
one placeholder may be used twice (`created_at < $2 OR (created_at = $2 AND id < $3)`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @property
    def rowcount(self) -> int: ...


class Params:
    """`$n` placeholders for a query built in pieces:

        p = Params()
        where = [f"queue = {p(queue)}"]
        if status: where.append(f"status = {p(status)}")
        tx.execute(f"SELECT * FROM jobs WHERE {' AND '.join(where)}", p.values)
    """

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


class Database(ABC):
    """One database (an SQLite file, or a PostgreSQL pool) for one or more stores of this process."""

    backend: str
    """`sqlite` or `postgresql`."""
    skip_locked = ""
    """Appended to a claiming `SELECT`: ` FOR UPDATE SKIP LOCKED` where rows can be locked (PostgreSQL)."""
    for_update = ""
    """Appended to a `SELECT` whose rows the transaction will change: ` FOR UPDATE` on PostgreSQL."""
    where: str
    """For messages and logs: the file, or `host:port/dbname` (never a password)."""

    @abstractmethod
    def transaction(self, *, durable: bool = False) -> AbstractContextManager[Tx]:
        """One transaction, committed when the block ends (rolled back if it raises). `durable`: on disk before the
        commit returns, even after a power loss (what a `202` promises)."""

    @abstractmethod
    def close(self) -> None: ...

    def forget_deleted(self) -> None:
        """After an erasure: leave nothing of the deleted rows in the database's files where the database allows it
        (SQLite: deleted content is zeroed, `secure_delete`, and the WAL is checkpointed and truncated). PostgreSQL
        keeps dead rows in its files until VACUUM reuses the space; no client can force that away."""

    # --- for migrations ---

    @abstractmethod
    def lock_for_migrations(self, tx: Tx) -> None:
        """Hold the lock that makes one process at a time migrate, until `tx` ends."""

    @abstractmethod
    def tables(self, tx: Tx) -> set[str]:
        """The tables a store can see (PostgreSQL: of the first schema on the search path)."""

    @abstractmethod
    def columns(self, tx: Tx, table: str) -> list[str]: ...

    def after_migrations(self) -> None:
        """Settings that change the file (SQLite's WAL mode), made only once the database is known to be ours."""
