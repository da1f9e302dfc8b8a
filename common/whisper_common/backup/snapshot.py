"""A consistent copy of a live SQLite store through SQLite's online backup API, and what the copy records: its schema
versions, its row counts and the files its rows reference.

The copy is read in one step (one read transaction): in WAL mode the service keeps writing meanwhile and the copy is
the database as of one commit. The source is opened read-only; the copy is switched to a rollback journal so it is one
self-contained file (the service turns WAL on again when it opens it).
"""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from whisper_common.backup.errors import UnreadableDatabase
from whisper_common.backup.manifest import SchemaVersion, StoreState, safe_relative
from whisper_common.backup.stores import FILE_COLUMNS, StoreSpec
from whisper_common.db.migrations import VERSION_TABLE

BUSY_TIMEOUT_SECONDS = 30.0


def snapshot(source: Path, destination: Path) -> None:
    try:
        with closing(sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True,
                                     timeout=BUSY_TIMEOUT_SECONDS)) as live:
            with closing(sqlite3.connect(destination)) as copy:
                live.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE").fetchall()
    except sqlite3.DatabaseError as exc:
        destination.unlink(missing_ok=True)
        raise UnreadableDatabase(
            f"{source} cannot be read as an SQLite database ({exc}); nothing was archived: see the service's log, and "
            "restore that file from an earlier backup"
        ) from None


def describe(copy: Path, spec: StoreSpec) -> tuple[StoreState, list[str]]:
    """The store's state in a snapshot, and the files (relative to DATA_DIR) its rows reference."""
    with closing(sqlite3.connect(copy)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = []
        if VERSION_TABLE in tables:
            versions = [
                SchemaVersion(version=int(version), additive=bool(additive))
                for version, additive in connection.execute(
                    f"SELECT version, additive FROM {VERSION_TABLE} WHERE store = ? ORDER BY version",
                    (spec.schema.store,),
                )
            ]
        rows = {
            table: int(connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])
            for table in sorted(spec.schema.tables & tables)
        }
        referenced: list[str] = []
        table_column = FILE_COLUMNS.get(spec.schema.store)
        if table_column is not None and table_column[0] in tables:
            table, column = table_column
            referenced = [
                safe_relative(value)
                for (value,) in connection.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")
            ]
    state = StoreState(store=spec.schema.store, file=spec.file, versions=versions, latest_known=spec.schema.latest,
                       rows=rows)
    return state, referenced
