"""The job store: one interface over SQLite (the default, a file in DATA_DIR) and PostgreSQL (a queue shared by
several processes or hosts). The SQL is shared; each backend supplies connections, placeholders and row locking.

    store = open_store(settings)                        # SqliteStore or PostgresStore
    job = store.claim(owner="host:pid", now=time.time(), lease_seconds=60)   # oldest runnable job, leased, or None

Every state change of a running job names its lease owner (`WHERE lease_owner = ?`), so a worker that lost its lease
(it stalled, another took the job over) can never finish the job a second time. A finished job and its webhook
delivery are written in one transaction: the outbox never misses a job, and never has one twice.

Tables and columns are plain (`jobs.status`, `jobs.created_at` in Unix seconds) so operators can query them, e.g.
KEDA's `SELECT COUNT(*) FROM jobs WHERE status = 'queued'`.
"""
from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from whisper_common.jobs.model import (
    FINISHED,
    AttemptView,
    DeliveryRow,
    DeliveryView,
    JobRow,
    JobStatus,
    event_payload,
    iso,
    new_delivery_id,
)

logger = logging.getLogger("whisper_common.jobs.store")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
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
    "CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs (queue, status, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (queue, created_at, id)",
    """CREATE TABLE IF NOT EXISTS webhook_deliveries (
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
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (queue, status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_job ON webhook_deliveries (job_id)",
    """CREATE TABLE IF NOT EXISTS webhook_attempts (
        delivery_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        status_code INTEGER,
        error TEXT,
        PRIMARY KEY (delivery_id, attempt)
    )""",
    "CREATE TABLE IF NOT EXISTS webhook_disabled_urls (url TEXT PRIMARY KEY, disabled_at DOUBLE PRECISION NOT NULL)",
)

JOB_COLUMNS = tuple(JobRow.model_fields)


class DuplicateKey(Exception):
    """An insert met a unique constraint (the Idempotency-Key)."""


class StorageFull(Exception):
    """The database could not write: no space left."""


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @property
    def rowcount(self) -> int: ...


@dataclass(frozen=True)
class Finish:
    """How a run ended: the status, and the result (succeeded) or error (failed) to keep."""

    status: JobStatus
    result: str | None = None
    error_message: str | None = None
    error_code: str | None = None
    audio_seconds: float | None = None
    audio_seconds_done: float | None = None

    def error_json(self) -> str | None:
        if self.error_message is None:
            return None
        return json.dumps({"message": self.error_message, "code": self.error_code or "job_failed"})


def backoff(base: float, attempt: int, cap: float = 3600.0) -> float:
    """`base * 2**(attempt-1)`, capped, with ±20 % jitter so retries of many jobs or webhooks do not align."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay * random.uniform(0.8, 1.2)


class QueueState(NamedTuple):
    counts: dict[str, int]  # jobs by status
    oldest_queued_created_at: float | None
    pending_deliveries: int  # webhook deliveries still to be made (first attempt or a retry)


class SqlStore:
    """The queue's SQL. Subclasses implement `transaction()` (and set `skip_locked` where the database has it).

    `queue` names the service (`whisper_faster`, `whisperx`): services sharing a database or a DATA_DIR see and run
    only their own jobs."""

    queue = "default"

    skip_locked = ""
    for_update = ""
    backend = "sql"

    def transaction(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def create_schema(self) -> None:
        with self.transaction() as tx:
            for statement in SCHEMA:
                tx.execute(statement)

    # --- submitting and reading ---

    def insert(self, job: JobRow) -> JobRow:
        """Insert a new job; DuplicateKey when its idempotency key exists (read that job with `by_idempotency_key`)."""
        values = job.model_dump()
        columns = ", ".join(JOB_COLUMNS)
        marks = ", ".join("?" for _ in JOB_COLUMNS)
        with self.transaction() as tx:
            tx.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", [values[name] for name in JOB_COLUMNS])
        return job

    def get(self, job_id: str) -> JobRow | None:
        with self.transaction() as tx:
            rows = tx.execute("SELECT * FROM jobs WHERE id = ? AND queue = ?", (job_id, self.queue))
        return JobRow(**rows[0]) if rows else None

    def by_idempotency_key(self, key: str) -> JobRow | None:
        with self.transaction() as tx:
            rows = tx.execute("SELECT * FROM jobs WHERE idempotency_key = ? AND queue = ?", (key, self.queue))
        return JobRow(**rows[0]) if rows else None

    def list(self, status: JobStatus | None, limit: int, after: str | None) -> tuple[list[JobRow], bool]:
        """Newest first; `after` is the id of the last job of the previous page."""
        where, params = ["queue = ?"], [self.queue]
        with self.transaction() as tx:
            if status is not None:
                where.append("status = ?")
                params.append(status.value)
            if after is not None:
                anchor = tx.execute("SELECT created_at FROM jobs WHERE id = ? AND queue = ?", (after, self.queue))
                if not anchor:
                    return [], False
                where.append("(created_at < ? OR (created_at = ? AND id < ?))")
                params += [anchor[0]["created_at"], anchor[0]["created_at"], after]
            clause = f"WHERE {' AND '.join(where)}"
            rows = tx.execute(
                f"SELECT * FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit + 1]
            )
        return [JobRow(**row) for row in rows[:limit]], len(rows) > limit

    def deliveries(self, job_id: str) -> list[DeliveryView]:
        with self.transaction() as tx:
            deliveries = tx.execute(
                "SELECT * FROM webhook_deliveries WHERE job_id = ? ORDER BY created_at, id", (job_id,)
            )
            attempts = tx.execute(
                "SELECT a.* FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id "
                "WHERE d.job_id = ? ORDER BY a.attempt",
                (job_id,),
            )
        by_delivery: dict[str, list[AttemptView]] = {}
        for row in attempts:
            by_delivery.setdefault(row["delivery_id"], []).append(
                AttemptView(
                    attempt=row["attempt"], at=iso(row["at"]) or "", outcome=row["outcome"],
                    status_code=row["status_code"], error=row["error"],
                )
            )
        return [
            DeliveryView(id=row["id"], event=row["event"], status=row["status"], attempts=by_delivery.get(row["id"], []))
            for row in deliveries
        ]

    def queue_state(self) -> QueueState:
        """What the activity route and the metrics report, read in one transaction (the runtime does so every
        second): job counts by status, the oldest queued job's creation time, webhook deliveries still to be made."""
        with self.transaction() as tx:
            by_status = tx.execute("SELECT status, COUNT(*) AS n FROM jobs WHERE queue = ? GROUP BY status", (self.queue,))
            oldest = tx.execute(
                "SELECT MIN(created_at) AS t FROM jobs WHERE queue = ? AND status = ?", (self.queue, JobStatus.QUEUED.value)
            )
            pending = tx.execute(
                "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE queue = ? AND status = 'pending'", (self.queue,)
            )
        counts = {status.value: 0 for status in JobStatus}
        counts.update({row["status"]: int(row["n"]) for row in by_status})
        return QueueState(counts, oldest[0]["t"] if oldest else None, int(pending[0]["n"]))

    # --- canceling and deleting ---

    def cancel_or_delete(self, job_id: str, now: float) -> tuple[JobRow | None, bool]:
        """Cancel a queued job (at once) or a running one (its worker stops at the next segment); delete a finished
        one. Returns (the job as it is now, deleted?)."""
        with self.transaction() as tx:
            rows = tx.execute(f"SELECT * FROM jobs WHERE id = ? AND queue = ?{self.for_update}", (job_id, self.queue))
            if not rows:
                return None, False
            job = JobRow(**rows[0])
            if job.status in FINISHED:
                self._delete(tx, job_id)
                return job, True
            if job.status is JobStatus.RUNNING:
                tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
                job.cancel_requested = 1
                return job, False
            finished = self._finish(tx, job_id, None, Finish(JobStatus.CANCELED), now)
            return finished, False

    def _delete(self, tx: Tx, job_id: str) -> None:
        tx.execute(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE job_id = ?)",
            (job_id,),
        )
        tx.execute("DELETE FROM webhook_deliveries WHERE job_id = ?", (job_id,))
        tx.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def expired(self, finished_before: float, limit: int = 100) -> list[JobRow]:
        with self.transaction() as tx:
            rows = tx.execute(
                "SELECT * FROM jobs WHERE queue = ? AND status IN (?, ?, ?) AND finished_at < ? ORDER BY finished_at "
                "LIMIT ?",
                [self.queue, *(status.value for status in FINISHED), finished_before, limit],
            )
        return [JobRow(**row) for row in rows]

    def delete(self, job_id: str) -> None:
        with self.transaction() as tx:
            self._delete(tx, job_id)

    # --- the worker's side: leases ---

    def claim(self, owner: str, now: float, lease_seconds: float) -> JobRow | None:
        """Lease the oldest queued job whose backoff is over: status running, attempts + 1."""
        with self.transaction() as tx:
            rows = tx.execute(
                "UPDATE jobs SET status = ?, lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1, "
                "started_at = COALESCE(started_at, ?) WHERE id = ("
                "SELECT id FROM jobs WHERE queue = ? AND status = ? AND run_after <= ? ORDER BY created_at, id LIMIT 1"
                f"{self.skip_locked}) AND status = ? RETURNING *",
                (JobStatus.RUNNING.value, owner, now + lease_seconds, now, self.queue, JobStatus.QUEUED.value, now,
                 JobStatus.QUEUED.value),
            )
        return JobRow(**rows[0]) if rows else None

    def renew(
        self, job_id: str, owner: str, expires_at: float, done: float, total: float | None
    ) -> bool | None:
        """Extend the lease and record progress. Returns whether a cancel was asked, or None when the lease is lost."""
        with self.transaction() as tx:
            rows = tx.execute(
                "UPDATE jobs SET lease_expires_at = ?, audio_seconds_done = ?, audio_seconds = COALESCE(?, audio_seconds) "
                "WHERE id = ? AND lease_owner = ? AND status = ? RETURNING cancel_requested",
                (expires_at, done, total, job_id, owner, JobStatus.RUNNING.value),
            )
        return bool(rows[0]["cancel_requested"]) if rows else None

    def finish(self, job_id: str, owner: str, outcome: Finish, now: float) -> JobRow | None:
        """End a run this owner still holds; with a webhook_url, queue its delivery in the same transaction. None when
        the lease was lost (the job is someone else's now, or already finished)."""
        with self.transaction() as tx:
            return self._finish(tx, job_id, owner, outcome, now)

    def _finish(self, tx: Tx, job_id: str, owner: str | None, outcome: Finish, now: float) -> JobRow | None:
        owner_clause = "lease_owner = ?" if owner is not None else "lease_owner IS NULL"
        owner_param = (owner,) if owner is not None else ()
        rows = tx.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, result = ?, error = ?, lease_owner = NULL, "
            "lease_expires_at = NULL, audio_seconds = COALESCE(?, audio_seconds), "
            "audio_seconds_done = COALESCE(?, audio_seconds_done) "
            f"WHERE id = ? AND status IN (?, ?) AND {owner_clause} RETURNING *",
            (outcome.status.value, now, outcome.result, outcome.error_json(), outcome.audio_seconds,
             outcome.audio_seconds_done, job_id, JobStatus.QUEUED.value, JobStatus.RUNNING.value, *owner_param),
        )
        if not rows:
            return None
        job = JobRow(**rows[0])
        if job.webhook_url:
            delivery_id = new_delivery_id()
            tx.execute(
                "INSERT INTO webhook_deliveries (id, queue, job_id, url, event, payload, status, created_at, "
                "next_attempt_at, attempts) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, 0)",
                (delivery_id, job.queue, job.id, job.webhook_url, f"job.{job.status.value}", event_payload(job, delivery_id, now),
                 now, now),
            )
        return job

    def set_audio(self, job_id: str, owner: str, audio_file: str) -> None:
        with self.transaction() as tx:
            tx.execute("UPDATE jobs SET audio_file = ? WHERE id = ? AND lease_owner = ?", (audio_file, job_id, owner))

    def retry_later(self, job_id: str, owner: str, run_after: float, message: str, code: str) -> bool:
        """Back to the queue after a transient failure (the error stays visible until the next run ends). False when
        the lease is lost or a cancel was asked meanwhile (the job is not requeued: its worker ends it canceled)."""
        error = json.dumps({"message": message, "code": code})
        with self.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires_at = NULL, run_after = ?, error = ? "
                "WHERE id = ? AND lease_owner = ? AND status = ? AND cancel_requested = 0",
                (JobStatus.QUEUED.value, run_after, error, job_id, owner, JobStatus.RUNNING.value),
            )
            return tx.rowcount == 1

    def release(self, job_id: str, owner: str, run_after: float) -> bool:
        """Give a job back without counting the attempt (shutdown, or the inference gate was full)."""
        with self.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires_at = NULL, run_after = ?, "
                "attempts = attempts - 1 WHERE id = ? AND lease_owner = ? AND status = ?",
                (JobStatus.QUEUED.value, run_after, job_id, owner, JobStatus.RUNNING.value),
            )
            return tx.rowcount == 1

    def recover_expired(self, now: float, retry_base: float) -> list[JobRow]:
        """Jobs whose worker died (lease expired): back to the queue with backoff, or failed when out of attempts, or
        canceled when a cancel was asked. Returns the jobs that finished here."""
        finished: list[JobRow] = []
        with self.transaction() as tx:
            rows = tx.execute(
                f"SELECT * FROM jobs WHERE queue = ? AND status = ? AND lease_expires_at < ?{self.skip_locked}",
                (self.queue, JobStatus.RUNNING.value, now),
            )
            for row in rows:  # each row on a savepoint of its own: one that cannot be recovered does not block the rest
                tx.execute("SAVEPOINT recover_row")
                try:
                    ended = self._recover(tx, JobRow(**row), now, retry_base)
                except Exception as exc:  # noqa: BLE001 - logged; the other expired jobs still recover
                    tx.execute("ROLLBACK TO SAVEPOINT recover_row")
                    logger.error("an expired job could not be recovered", extra={"job_id": row.get("id")}, exc_info=exc)
                    continue
                tx.execute("RELEASE SAVEPOINT recover_row")
                if ended is not None:
                    finished.append(ended)
        return finished

    def _recover(self, tx: Tx, job: JobRow, now: float, retry_base: float) -> JobRow | None:
        lost = f"the worker running it stopped (attempt {job.attempts} of {job.max_attempts})"
        if job.cancel_requested or job.attempts >= job.max_attempts:
            outcome = (
                Finish(JobStatus.CANCELED) if job.cancel_requested
                else Finish(JobStatus.FAILED, error_message=lost, error_code="worker_lost")
            )
            return self._finish(tx, job.id, job.lease_owner, outcome, now)
        tx.execute(
            "UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires_at = NULL, run_after = ?, error = ? "
            "WHERE id = ? AND lease_owner = ? AND status = ?",
            (JobStatus.QUEUED.value, now + backoff(retry_base, job.attempts),
             json.dumps({"message": lost, "code": "worker_lost"}), job.id, job.lease_owner, JobStatus.RUNNING.value),
        )
        return None

    # --- the webhook outbox ---

    def claim_delivery(self, owner: str, now: float, lease_seconds: float) -> DeliveryRow | None:
        with self.transaction() as tx:
            rows = tx.execute(
                "UPDATE webhook_deliveries SET lease_owner = ?, lease_expires_at = ? WHERE id = ("
                "SELECT id FROM webhook_deliveries WHERE queue = ? AND status = 'pending' AND next_attempt_at <= ? AND "
                f"(lease_expires_at IS NULL OR lease_expires_at < ?) ORDER BY next_attempt_at LIMIT 1{self.skip_locked}"
                ") RETURNING *",
                (owner, now + lease_seconds, self.queue, now, now),
            )
        return DeliveryRow(**rows[0]) if rows else None

    def url_disabled(self, url: str) -> bool:
        with self.transaction() as tx:
            return bool(tx.execute("SELECT url FROM webhook_disabled_urls WHERE url = ?", (url,)))

    def record_attempt(
        self,
        delivery: DeliveryRow,
        owner: str,
        now: float,
        outcome: str,
        status_code: int | None,
        error: str | None,
        next_attempt_at: float | None,
    ) -> bool:
        """Record one attempt and move the delivery on: `delivered`/`failed`/`disabled` end it, `retrying` schedules
        the next attempt at `next_attempt_at`. False when this owner no longer holds the delivery's lease."""
        status = {"retrying": "pending"}.get(outcome, outcome)
        with self.transaction() as tx:
            rows = tx.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = ?, next_attempt_at = ?, "
                "lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ? RETURNING attempts",
                (status, next_attempt_at if next_attempt_at is not None else now, delivery.id, owner),
            )
            if not rows:
                return False
            tx.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, at, outcome, status_code, error) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (delivery.id, rows[0]["attempts"], now, outcome, status_code, error),
            )
            if outcome == "disabled":
                tx.execute("DELETE FROM webhook_disabled_urls WHERE url = ?", (delivery.url,))
                tx.execute("INSERT INTO webhook_disabled_urls (url, disabled_at) VALUES (?, ?)", (delivery.url, now))
        return True


def rows_of(cursor: Any) -> Iterator[dict[str, Any]]:
    if cursor.description is None:
        return iter(())
    names = [column[0] for column in cursor.description]
    return (dict(zip(names, row, strict=True)) for row in cursor.fetchall())
