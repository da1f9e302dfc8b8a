"""`open_database(target, schema)`: the one way a store gets its database, migrated and ready.

`target` is a `postgresql://` URL (a pool, shared by the processes and hosts that use it) or a path (an SQLite file).
A refusal (`DatabaseRefused`: a schema newer than the code, another application's file, a file that is no database,
a server out of reach) is logged as one line and raised; the database is left as it was.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from whisper_common.db.base import Database
from whisper_common.db.errors import DatabaseRefused
from whisper_common.db.migrations import Schema, migrate

logger = logging.getLogger("whisper_common.db")


def is_postgres_url(target: str | Path | None) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_database(
    target: str | Path,
    schema: Schema,
    *,
    params: Mapping[str, str] | None = None,
    pool_size: int = 8,
    name: str = "whisper",
) -> Database:
    db: Database
    try:
        if is_postgres_url(target):
            from whisper_common.db.postgres import PostgresDatabase

            db = PostgresDatabase(str(target), max_size=pool_size, name=name)
        elif isinstance(target, str) and "://" in target:
            raise DatabaseRefused(f"unsupported database URL scheme '{target.split('://')[0]}': use postgresql://")
        else:
            from whisper_common.db.sqlite import SqliteDatabase

            db = SqliteDatabase(Path(target))
    except DatabaseRefused as exc:
        logger.error(f"refusing to start: {exc}", extra={"store": schema.store})
        raise
    try:
        migrate(db, schema, params)
        db.after_migrations()
    except BaseException as exc:
        db.close()
        if isinstance(exc, DatabaseRefused):
            logger.error(f"refusing to start: {exc}", extra={"store": schema.store})
        raise
    return db
