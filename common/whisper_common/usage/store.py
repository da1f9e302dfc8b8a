"""The usage table: per service, UTC day, owner, route and model, the requests, audio seconds and jobs counted, for
chargeback (`GET /v1/usage`) and the daily audio quota. An SQLite file in DATA_DIR (`usage.sqlite3`), or PostgreSQL
when JOBS_DATABASE_URL is set (then one table for every process and both services: rows carry their `service`).

    store = open_usage_store(settings)
    store.add("whisper_faster", [UsageRow("2025-01-31", "team-a", "/v1/audio/transcriptions", "tiny.en", 1, 11.0, 0)])
    store.audio_seconds_on("whisper_faster", "2025-01-31")          # {"team-a": 11.0}

Rows hold aggregates only (no job, file or transcript): erasing an owner's data keeps them.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from whisper_common.db import Database, Migration, Params, Schema, open_database
from whisper_common.owners import Owner, owner_filter
from whisper_common.settings import ServiceSettings

SQLITE_FILE = "usage.sqlite3"

USAGE_SCHEMA = Schema(
    store="usage",
    tables=frozenset({"usage_daily"}),
    migrations=(
        Migration(1, "usage per service, day, owner, route and model", (
            "CREATE TABLE IF NOT EXISTS usage_daily (service TEXT NOT NULL, day TEXT NOT NULL, owner TEXT NOT NULL, "
            "route TEXT NOT NULL, model TEXT NOT NULL, requests BIGINT NOT NULL DEFAULT 0, "
            "audio_seconds DOUBLE PRECISION NOT NULL DEFAULT 0, jobs BIGINT NOT NULL DEFAULT 0, "
            "PRIMARY KEY (service, day, owner, route, model))",
            "CREATE INDEX IF NOT EXISTS usage_daily_owner ON usage_daily (service, owner, day)",
        )),
    ),
)


@dataclass(frozen=True)
class UsageRow:
    day: str
    """`YYYY-MM-DD`, UTC."""
    owner: str
    route: str
    model: str
    requests: int = 0
    audio_seconds: float = 0.0
    jobs: int = 0


class UsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, service: str, rows: Iterable[UsageRow]) -> None:
        """Add the counts to the table, in one transaction (a counter that is not there yet starts at them)."""
        with self.db.transaction() as tx:
            for row in rows:
                tx.execute(
                    "INSERT INTO usage_daily (service, day, owner, route, model, requests, audio_seconds, jobs) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (service, day, owner, route, model) DO UPDATE "
                    "SET requests = usage_daily.requests + excluded.requests, "
                    "audio_seconds = usage_daily.audio_seconds + excluded.audio_seconds, "
                    "jobs = usage_daily.jobs + excluded.jobs",
                    (service, row.day, row.owner, row.route, row.model, row.requests, row.audio_seconds, row.jobs),
                )

    def audio_seconds_on(self, service: str, day: str) -> dict[str, float]:
        """Audio seconds per owner on `day` (every process's, once flushed)."""
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT owner, SUM(audio_seconds) AS seconds FROM usage_daily WHERE service = $1 AND day = $2 "
                "GROUP BY owner",
                (service, day),
            )
        return {row["owner"]: float(row["seconds"] or 0) for row in rows}

    def rows(self, service: str, owner: Owner, first_day: str, last_day: str, only: str | None = None) -> list[UsageRow]:
        """The caller's rows (an admin's: everyone's, or `only` that owner's) from `first_day` to `last_day`."""
        p = Params()
        where = [f"service = {p(service)}", f"day >= {p(first_day)}", f"day <= {p(last_day)}", owner_filter(p, owner)]
        if only is not None:
            where.append(f"owner = {p(only)}")
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT day, owner, route, model, requests, audio_seconds, jobs FROM usage_daily WHERE "
                f"{' AND '.join(where)} ORDER BY day, owner, route, model",
                p.values,
            )
        return [UsageRow(r["day"], r["owner"], r["route"], r["model"], int(r["requests"]), float(r["audio_seconds"]),
                         int(r["jobs"])) for r in rows]

    def close(self) -> None:
        self.db.close()


def open_usage_store(settings: ServiceSettings) -> UsageStore:
    target = settings.jobs_database_url or settings.data_dir / SQLITE_FILE
    return UsageStore(open_database(target, USAGE_SCHEMA, pool_size=2, name="whisper-usage"))
