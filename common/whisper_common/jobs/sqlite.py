"""The jobs store on an SQLite file in DATA_DIR (the default: the processes of one host). The queries are the
store's (`store.py`); the file, its lock and WAL settings are the database layer's (`whisper_common.db.sqlite`)."""
from __future__ import annotations

from pathlib import Path

from whisper_common.db import open_database
from whisper_common.jobs.schema import JOBS_SCHEMA
from whisper_common.jobs.store import SqlStore


class SqliteStore(SqlStore):
    def __init__(self, path: Path, queue: str) -> None:
        super().__init__(open_database(path, JOBS_SCHEMA, params={"queue": queue}), queue)
        self.path = path
