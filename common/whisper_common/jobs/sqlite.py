"""The default store: one SQLite file in DATA_DIR (WAL mode), for one service process."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from whisper_common.jobs.store import DuplicateKey, SqlStore, StorageFull, rows_of


class _SqliteTx:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.rowcount = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            cursor = self._connection.execute(sql, tuple(params))
        except sqlite3.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc
        rows = list(rows_of(cursor))
        self.rowcount = cursor.rowcount
        return rows


class SqliteStore(SqlStore):
    backend = "sqlite"

    def __init__(self, path: Path, queue: str) -> None:
        self.queue = queue
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection, used by one thread at a time: every call is short, and SQLite serialises writers anyway.
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()
        self.create_schema()

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTx]:
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _translate(exc) from exc
            try:
                yield _SqliteTx(self._connection)
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            try:
                self._connection.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._connection.execute("ROLLBACK")
                raise _translate(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _translate(exc: sqlite3.OperationalError) -> Exception:
    if "full" in str(exc).lower():
        return StorageFull(str(exc))
    return exc
