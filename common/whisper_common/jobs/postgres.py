"""A queue shared by several service processes or hosts: PostgreSQL (psycopg 3). Workers claim with
`FOR UPDATE SKIP LOCKED`, so two workers never take the same job and never wait on each other."""
from __future__ import annotations

from queue import Empty, LifoQueue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors

from whisper_common.jobs.store import SCHEMA, DuplicateKey, SqlStore, StorageFull, rows_of

_SCHEMA_LOCK = 7_311_001  # pg_advisory_xact_lock key: processes starting together create the tables one at a time


class _PostgresTx:
    def __init__(self, cursor: psycopg.Cursor) -> None:
        self._cursor = cursor
        self.rowcount = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            self._cursor.execute(sql.replace("?", "%s"), tuple(params))  # type: ignore[arg-type]
        except errors.UniqueViolation as exc:
            raise DuplicateKey(str(exc)) from exc
        except errors.DiskFull as exc:
            raise StorageFull(str(exc)) from exc
        self.rowcount = self._cursor.rowcount
        return list(rows_of(self._cursor))


class PostgresStore(SqlStore):
    backend = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    for_update = " FOR UPDATE"

    def __init__(self, url: str, queue: str, pool_size: int = 8) -> None:
        self.queue = queue
        self._url = url
        self._idle: LifoQueue[psycopg.Connection] = LifoQueue()
        self._pool_size = pool_size
        self._closed = threading.Event()
        self.create_schema()

    def create_schema(self) -> None:
        with self.transaction() as tx:
            tx.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
            for statement in SCHEMA:
                tx.execute(statement)

    def _connect(self) -> psycopg.Connection:
        try:
            return self._idle.get_nowait()
        except Empty:
            return psycopg.connect(self._url, connect_timeout=10, application_name="whisper-jobs")

    @contextmanager
    def transaction(self) -> Iterator[_PostgresTx]:
        connection = self._connect()
        healthy = False
        try:
            with connection.transaction(), connection.cursor() as cursor:
                yield _PostgresTx(cursor)
            healthy = True
        finally:
            if healthy and not connection.broken and not self._closed.is_set() and self._idle.qsize() < self._pool_size:
                self._idle.put(connection)
            else:
                connection.close()

    def close(self) -> None:
        self._closed.set()
        while True:
            try:
                self._idle.get_nowait().close()
            except Empty:
                return
