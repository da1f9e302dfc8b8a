"""PostgreSQL (psycopg 3) for stores shared by several processes or hosts, through a `psycopg_pool.ConnectionPool`.

The pool checks a connection before handing it out (`ConnectionPool.check_connection`: an empty query), so one the
server closed meanwhile (a restart, `pg_terminate_backend`, an idle timeout of a proxy) is replaced, never given to a
store broken. Queries go through `RawCursor`: the `$n` in the text are PostgreSQL's own parameters.

Durability: PostgreSQL's default (`synchronous_commit=on`, `fsync=on`) makes every commit durable; a durable
transaction also sets `synchronous_commit` on for itself, so a server configured with it off still keeps a `202`'s
row. (A server running with `fsync=off` cannot be made durable by a client; `open` logs a warning.)
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from whisper_common.db.base import Database
from whisper_common.db.errors import DatabaseRefused, DuplicateKey, StorageFull

logger = logging.getLogger("whisper_common.db")

MIGRATION_LOCK = 7_311_001
"""The `pg_advisory_xact_lock` key migrations hold: one process at a time migrates a database (the release before
schema versions took the same key to create its tables)."""
CONNECT_TIMEOUT_SECONDS = 10


class _PostgresTx:
    def __init__(self, cursor: psycopg.Cursor[dict[str, Any]]) -> None:
        self._cursor = cursor
        self.rowcount = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            self._cursor.execute(sql, list(params) if params else None)
        except errors.UniqueViolation as exc:
            raise DuplicateKey(str(exc)) from exc
        except errors.DiskFull as exc:
            raise StorageFull(str(exc)) from exc
        self.rowcount = self._cursor.rowcount
        return self._cursor.fetchall() if self._cursor.description is not None else []


def describe(url: str) -> str:
    """`host:port/dbname` of a URL, for messages (the password stays out)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the PostgreSQL database of JOBS_DATABASE_URL"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class PostgresDatabase(Database):
    backend = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    for_update = " FOR UPDATE"

    def __init__(self, url: str, *, max_size: int = 8, name: str = "whisper") -> None:
        self.where = describe(url)
        settings = self._probe(url, name)
        if settings.get("fsync") == "off":
            logger.warning("PostgreSQL runs with fsync=off: an accepted job may be lost on power loss",
                           extra={"database": self.where})
        self.pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "cursor_factory": psycopg.RawCursor, "row_factory": dict_row,
                    "connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": name},
            check=ConnectionPool.check_connection,
            name=name,
            open=False,
        )
        self.pool.open()

    def _probe(self, url: str, name: str) -> dict[str, str]:
        """Connect once, before the pool: a database that cannot be reached stops the start with the reason (the
        pool would only say it timed out)."""
        try:
            with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name=name) as connection:
                rows = connection.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')"
                ).fetchall()
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())
            raise DatabaseRefused(f"cannot reach PostgreSQL at {self.where}: {reason}") from None
        return {str(key): str(value) for key, value in rows}

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[_PostgresTx]:
        with self.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
            if durable:
                cursor.execute("SET LOCAL synchronous_commit TO on")
            yield _PostgresTx(cursor)

    def close(self) -> None:
        self.pool.close()

    def lock_for_migrations(self, tx: Any) -> None:
        tx.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")

    def tables(self, tx: Any) -> set[str]:
        rows = tx.execute(
            "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return {row["name"] for row in rows}

    def columns(self, tx: Any, table: str) -> list[str]:
        rows = tx.execute(
            "SELECT column_name AS name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = $1 ORDER BY ordinal_position",
            (table,),
        )
        return [row["name"] for row in rows]
