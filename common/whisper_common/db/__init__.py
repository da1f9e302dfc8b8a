"""One database layer under every store (jobs, the webhook outbox, live sessions, and the stores to come): SQLite or
PostgreSQL behind one `Database`, opened with the store's schema migrated (`open_database`).

    db = open_database(settings.jobs_database_url or settings.data_dir / "jobs.sqlite3", JOBS_SCHEMA)
    with db.transaction() as tx:                       # one transaction; rows come back as dicts
        rows = tx.execute("SELECT * FROM jobs WHERE id = $1 AND queue = $2", (job_id, queue))

A store is a module of queries on this layer (`$1`, `$2`, ... bound by the driver, see `base`), plus its `Schema`
(`migrations`): it never opens a connection of its own. Modules: `base` (the transaction and what differs between
the two databases), `sqlite`, `postgres` (the pool), `migrations` (schema versions), `connect` (`open_database`),
`janitor` (periodic cleanup), `errors`. See docs/migrations.md.
"""
from whisper_common.db.base import Database, Params, Tx
from whisper_common.db.connect import is_postgres_url, open_database
from whisper_common.db.errors import (
    CorruptDatabase,
    DatabaseRefused,
    DuplicateKey,
    ForeignDatabase,
    SchemaTooNew,
    StorageFull,
)
from whisper_common.db.migrations import Migration, MigrationContext, Schema, migrate

__all__ = [
    "CorruptDatabase", "Database", "DatabaseRefused", "DuplicateKey", "ForeignDatabase", "Migration",
    "MigrationContext", "Params", "Schema", "SchemaTooNew", "StorageFull", "Tx", "is_postgres_url", "migrate",
    "open_database",
]
