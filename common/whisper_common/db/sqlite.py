"""An SQLite file (in DATA_DIR) for the processes of one host: one connection per process, used by one thread at a
time; every transaction takes the write lock at once (`BEGIN IMMEDIATE`), so processes sharing the file wait for each
other (up to 30 s) instead of failing.

Deleted rows are overwritten (`secure_delete`), so what an erasure or the retention removes is not left in free pages;
`forget_deleted` also empties the WAL, which still holds the pages as they were.

Journal and sync: WAL with `synchronous=NORMAL` (a commit is atomic and survives a crash of the process; the last
commits may be lost on power loss), and `synchronous=FULL` for a durable transaction (the WAL is synced before
COMMIT returns). WAL is switched on only after the migrations accepted the file, so a refused file is left as it was.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from whisper_common.db.base import Database
from whisper_common.db.errors import CorruptDatabase, DuplicateKey, StorageFull

BUSY_TIMEOUT_SECONDS = 30.0
_UNIQUE = (sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
_UNREADABLE = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class _SqliteTx:
    def __init__(self, connection: sqlite3.Connection, where: str) -> None:
        self._connection = connection
        self._where = where
        self.rowcount = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            cursor = self._connection.execute(sql, {str(number): value for number, value in enumerate(params, 1)})
            rows = cursor.fetchall()
        except sqlite3.DatabaseError as exc:
            _raise_translated(exc, self._where)
        self.rowcount = cursor.rowcount
        return rows


class SqliteDatabase(Database):
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.where = str(path)
        self._connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
        )
        self._connection.row_factory = _dict_row
        self._connection.execute("PRAGMA secure_delete = ON")  # a deleted row's bytes are overwritten, not left free
        self._lock = threading.Lock()
        self._synchronous = "FULL"  # SQLite's default, until after_migrations
        try:  # reads the header and the schema: a file that is no database fails here, before anything is written
            self._connection.execute("SELECT name FROM sqlite_master").fetchall()
        except sqlite3.DatabaseError as exc:
            self._connection.close()
            _raise_translated(exc, self.where)

    def after_migrations(self) -> None:
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL").fetchall()
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._synchronous = "NORMAL"

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[_SqliteTx]:
        with self._lock:
            if durable and self._synchronous != "FULL":
                self._connection.execute("PRAGMA synchronous=FULL")
            try:
                self._run("BEGIN IMMEDIATE")
                try:
                    yield _SqliteTx(self._connection, self.where)
                except BaseException:
                    self._connection.execute("ROLLBACK")
                    raise
                try:
                    self._run("COMMIT")
                except BaseException:
                    self._connection.execute("ROLLBACK")
                    raise
            finally:
                if durable and self._synchronous != "FULL":
                    self._connection.execute(f"PRAGMA synchronous={self._synchronous}")

    def _run(self, statement: str) -> None:
        try:
            self._connection.execute(statement)
        except sqlite3.DatabaseError as exc:
            _raise_translated(exc, self.where)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def forget_deleted(self) -> None:
        with self._lock:
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def lock_for_migrations(self, tx: Any) -> None:
        """Nothing to add: every transaction holds SQLite's write lock from BEGIN IMMEDIATE on."""

    def tables(self, tx: Any) -> set[str]:
        rows = tx.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'")
        return {row["name"] for row in rows}

    def columns(self, tx: Any, table: str) -> list[str]:
        return [row["name"] for row in tx.execute("SELECT name FROM pragma_table_info($1) ORDER BY cid", (table,))]


def _raise_translated(exc: sqlite3.DatabaseError, where: str) -> NoReturn:
    """The layer's own exception for what stores handle (a duplicate key, a full disk, an unreadable file); any other
    error as SQLite raised it."""
    translated = _translate(exc, where)
    if translated is exc:
        raise exc
    raise translated from exc


def _translate(exc: sqlite3.DatabaseError, where: str) -> Exception:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.IntegrityError) and code in _UNIQUE:
        return DuplicateKey(str(exc))
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return StorageFull(str(exc))
    if code is not None and code & 0xFF in _UNREADABLE:
        return CorruptDatabase(
            f"{where} is not a usable SQLite database ({exc}); it was left as it is: restore it from a backup, or move "
            "it away to start with an empty one"
        )
    return exc
