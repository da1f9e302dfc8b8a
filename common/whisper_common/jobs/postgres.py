"""The jobs store on PostgreSQL: a queue shared by several service processes or hosts. Workers claim with
`FOR UPDATE SKIP LOCKED`, so two workers never take the same job and never wait on each other. The queries are the
store's (`store.py`); the pool is the database layer's (`whisper_common.db.postgres`)."""
from __future__ import annotations

from whisper_common.db import open_database
from whisper_common.jobs.schema import JOBS_SCHEMA
from whisper_common.jobs.store import SqlStore


class PostgresStore(SqlStore):
    def __init__(self, url: str, queue: str, pool_size: int = 8) -> None:
        super().__init__(
            open_database(url, JOBS_SCHEMA, params={"queue": queue}, pool_size=pool_size, name="whisper-jobs"), queue
        )
