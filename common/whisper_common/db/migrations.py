"""Schema versions: each store declares its migrations, and `migrate` applies the missing ones in order when the store
opens, in one transaction, under a lock, recording each in table `whisper_schema_versions` (store, version, name,
additive, applied_at).

    JOBS_SCHEMA = Schema("jobs", tables={"jobs", ...}, migrations=(
        Migration(1, "tables of the release before schema versions", (CREATE_JOBS, ...)),
        Migration(2, "jobs.owner", ("ALTER TABLE jobs ADD COLUMN owner TEXT",), additive=True),
    ))

- **One migrator.** PostgreSQL: the transaction holds an advisory lock first, so processes starting together migrate
  one after the other (the second finds nothing left to do). SQLite: the transaction holds the write lock.
  The whole run is one transaction: a migration that fails leaves the schema as it was.
- **Newer than the code.** A version this release does not know, applied by a newer one, stops the start with one
  line (`SchemaTooNew`) unless it was marked `additive`: such a migration only adds what older code ignores (a table,
  a column with a default or NULL, an index), so release N keeps running beside N+1 on one shared queue during a
  rolling upgrade (expand/contract; docs/migrations.md).
- **Before versions.** A database with the store's tables and no version row is a release before schema versions:
  migration 1 of every store is written to take that schema as it is (`CREATE TABLE IF NOT EXISTS`, columns added
  where an older layout lacks them). An SQLite file with tables of which none is the store's is another
  application's: refused (`ForeignDatabase`), untouched.

Why not yoyo-migrations 9.0.0 (the small kept library; Alembic needs SQLAlchemy, which whisper-faster does not carry):
- its lock is a row in `yoyo_lock`, polled every 0.5 s, `LockTimeout` after 10 s; a migrator killed mid-way (an
  OOM-killed pod) leaves the row, and every later start fails until someone runs `yoyo break-lock`. PostgreSQL's
  advisory lock here ends with the session, and waiting processes go on the moment it is released;
- it connects by itself from a URI (psycopg2 unless told `postgresql+psycopg://`): a second connection path beside
  the pool, which this layer exists to remove;
- it has no notion of a schema newer than the code (it applies what is missing, and says nothing of the rest), nor of
  additive versions for a rolling upgrade; both would be written around it anyway;
- measured (bench/bench_migrations.py `--compare-yoyo`, 2-core shared machine, load average 5-6, so +-50 % from run
  to run): a process starting on an up-to-date SQLite database spends 249 ms in yoyo (import, connection, lock row,
  nothing to apply) against 79 ms here (import, open, version check), medians of 9 (331 ms against 143 ms in an
  earlier run).
This runner is the ~100 lines below.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from whisper_common.db.base import Database, Tx
from whisper_common.db.errors import ForeignDatabase, SchemaTooNew

logger = logging.getLogger("whisper_common.db")

VERSION_TABLE = "whisper_schema_versions"
_CREATE_VERSION_TABLE = f"""CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
    store TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    additive INTEGER NOT NULL DEFAULT 0,
    applied_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (store, version)
)"""


@dataclass
class MigrationContext:
    """What a migration step written in Python gets: the open transaction, the database (its backend, tables and
    columns) and the store's parameters (e.g. the jobs store's `queue`)."""

    tx: Tx
    db: Database
    params: Mapping[str, str]

    def execute(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return self.tx.execute(sql, params)

    def tables(self) -> set[str]:
        return self.db.tables(self.tx)

    def columns(self, table: str) -> list[str]:
        return self.db.columns(self.tx, table)


Step = str | Callable[[MigrationContext], None]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    steps: tuple[Step, ...]
    """SQL statements (the same text for both databases where it can be), or functions for what must look first."""
    additive: bool = False
    """Only adds what the previous release ignores, so it may keep running on the migrated schema."""


@dataclass(frozen=True)
class Schema:
    store: str
    tables: frozenset[str]
    """The tables the store owns: found without a version row, they are a release's from before schema versions."""
    migrations: tuple[Migration, ...] = field(default=())

    def __post_init__(self) -> None:
        versions = [migration.version for migration in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"the {self.store} migrations must be numbered 1, 2, 3, ... in order: {versions}")

    @property
    def latest(self) -> int:
        return len(self.migrations)


def migrate(db: Database, schema: Schema, params: Mapping[str, str] | None = None) -> list[int]:
    """Bring the store's schema up to date; returns the versions applied here (none when another process did)."""
    started = time.perf_counter()
    applied_here: list[int] = []
    with db.transaction() as tx:
        db.lock_for_migrations(tx)
        existing = db.tables(tx)
        if VERSION_TABLE not in existing and db.backend == "sqlite" and existing and not existing & schema.tables:
            raise ForeignDatabase(
                f"{db.where} holds tables this service did not create ({', '.join(sorted(existing)[:5])}); it was left "
                "as it is: point DATA_DIR at the service's own data, or move the file away"
            )
        tx.execute(_CREATE_VERSION_TABLE)
        rows = tx.execute(f"SELECT version, additive FROM {VERSION_TABLE} WHERE store = $1", (schema.store,))
        applied = {int(row["version"]): bool(row["additive"]) for row in rows}
        newer = sorted(version for version in applied if version > schema.latest)
        blocking = [version for version in newer if not applied[version]]
        if blocking:
            raise SchemaTooNew(
                f"the {schema.store} schema in {db.where} is at version {max(newer)}, written by a newer release; this "
                f"release knows versions up to {schema.latest} and cannot run on version {blocking[0]}: run the newer "
                "release, or restore a backup taken before the upgrade"
            )
        if newer:
            logger.warning("the schema is newer than this release, by additive versions only: running on it",
                           extra={"store": schema.store, "database": db.where, "versions": newer})
        context = MigrationContext(tx, db, params or {})
        for migration in schema.migrations:
            if migration.version in applied:
                continue
            for step in migration.steps:
                if callable(step):
                    step(context)
                else:
                    tx.execute(step)
            tx.execute(
                f"INSERT INTO {VERSION_TABLE} (store, version, name, additive, applied_at) VALUES ($1, $2, $3, $4, $5)",
                (schema.store, migration.version, migration.name, int(migration.additive), time.time()),
            )
            applied_here.append(migration.version)
    if applied_here:
        logger.info("schema migrated", extra={"store": schema.store, "database": db.where, "versions": applied_here,
                                              "ms": round((time.perf_counter() - started) * 1000, 1)})
    return applied_here
