"""The jobs store's schema (jobs, the webhook outbox), as migrations of `whisper_common.db`.

Migration 2 (additive) gives every job its `owner` (`''` for jobs from before owners: only an admin sees them), with
the indexes the owner-scoped lists and the fair claim use; each webhook delivery its `receiver` (scheme, host and
port: the outbox sends to one receiver at a time); and `webhook_disabled`, the URLs a 410 disabled, per owner and with
an id the owner (or an admin) re-enables them by. Idempotency keys are stored as `<owner>:<key>`, so the unique key
`(queue, idempotency_key)` of migration 1 is per owner without a rebuild of the table.

Migration 1 is the schema of the release before schema versions, frozen as that release wrote it: on a database that
release made (tables, no version row) it changes nothing; on an older development layout without the `queue` column
it adds the column (the rows belong to the service opening the file) and its unique key. A later change is a new
`Migration` appended to `JOBS_SCHEMA` — never an edit of one already released (docs/migrations.md).
"""
from __future__ import annotations

import re
import uuid

from whisper_common.db import DatabaseRefused, Migration, MigrationContext, Schema

RELEASE_TABLES = {
    "jobs": """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        run_after DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        lease_owner TEXT,
        lease_expires_at DOUBLE PRECISION,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        options TEXT NOT NULL,
        metadata TEXT NOT NULL,
        webhook_url TEXT,
        audio_url TEXT,
        audio_file TEXT,
        idempotency_key TEXT,
        request_hash TEXT,
        audio_seconds DOUBLE PRECISION,
        audio_seconds_done DOUBLE PRECISION NOT NULL DEFAULT 0,
        error TEXT,
        result TEXT,
        UNIQUE (queue, idempotency_key)
    )""",
    "webhook_deliveries": """CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        job_id TEXT NOT NULL,
        url TEXT NOT NULL,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at DOUBLE PRECISION
    )""",
    "webhook_attempts": """CREATE TABLE IF NOT EXISTS webhook_attempts (
        delivery_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        status_code INTEGER,
        error TEXT,
        PRIMARY KEY (delivery_id, attempt)
    )""",
    "webhook_disabled_urls": """CREATE TABLE IF NOT EXISTS webhook_disabled_urls (
        url TEXT PRIMARY KEY,
        disabled_at DOUBLE PRECISION NOT NULL
    )""",
}
RELEASE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs (queue, status, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (queue, created_at, id)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (queue, status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_job ON webhook_deliveries (job_id)",
)
_COLUMN = re.compile(r"^\s*([a-z_]+) ([A-Z][A-Z ]*?(?: DEFAULT [^,\s]+)?),?$")
_QUEUE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _columns(create: str) -> dict[str, str]:
    """Column name -> its definition, from one of the CREATE TABLE statements above."""
    found = {}
    for line in create.splitlines()[1:]:
        match = _COLUMN.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _complete_older_tables(context: MigrationContext) -> None:
    """Add what an older layout of a table lacks: `queue` (the opening service's; its unique key with it) and any
    column that may be NULL or has a default. A missing column that needs a value refuses the start."""
    present_tables = context.tables()
    queue = context.params.get("queue", "")
    for table, create in RELEASE_TABLES.items():
        if table not in present_tables:
            continue
        present = set(context.columns(table))
        for column, definition in _columns(create).items():
            if column in present:
                continue
            if column == "queue":
                if not _QUEUE_NAME.fullmatch(queue):
                    raise ValueError(f"invalid queue name {queue!r}")
                context.execute(f"ALTER TABLE {table} ADD COLUMN queue TEXT NOT NULL DEFAULT '{queue}'")
                if table == "jobs":
                    context.execute(
                        "CREATE UNIQUE INDEX IF NOT EXISTS jobs_queue_idempotency_key ON jobs (queue, idempotency_key)"
                    )
            elif "PRIMARY KEY" in definition or ("NOT NULL" in definition and "DEFAULT" not in definition):
                raise DatabaseRefused(
                    f"table {table} in {context.db.where} lacks column {column}, which needs a value no migration can "
                    "give: it was not written by a release of this service"
                )
            else:
                context.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _carry_disabled_urls(context: MigrationContext) -> None:
    """URLs disabled before owners existed stay disabled for every owner (owner `''`) until an admin re-enables them."""
    for row in context.execute("SELECT url, disabled_at FROM webhook_disabled_urls"):
        context.execute(
            "INSERT INTO webhook_disabled (id, owner, url, disabled_at) VALUES ($1, '', $2, $3)",
            (f"whd_{uuid.uuid4().hex}", row["url"], row["disabled_at"]),
        )


OWNERS_STEPS = (
    "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (queue, owner, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_owner_status ON jobs (queue, owner, status)",
    "ALTER TABLE webhook_deliveries ADD COLUMN receiver TEXT",
    """CREATE TABLE IF NOT EXISTS webhook_disabled (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        url TEXT NOT NULL,
        disabled_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS webhook_disabled_owner_url ON webhook_disabled (owner, url)",
    _carry_disabled_urls,
)


JOBS_SCHEMA = Schema(
    store="jobs",
    tables=frozenset(RELEASE_TABLES),
    migrations=(
        Migration(
            1,
            "the tables of the release before schema versions",
            (_complete_older_tables, *RELEASE_TABLES.values(), *RELEASE_INDEXES),
        ),
        Migration(2, "owners: jobs.owner, webhook receivers, per-owner disabled webhook URLs", OWNERS_STEPS,
                  additive=True),
    ),
)
