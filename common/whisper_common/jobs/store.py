"""The job store: the queue's queries (jobs, the webhook outbox), on the database layer (`whisper_common.db`): an
SQLite file in DATA_DIR by default, PostgreSQL for a queue shared by several processes or hosts. The store opens no
connection of its own; its tables are migrations in `jobs/schema.py`.

    store = open_store(settings, queue)                 # in the runtime: SqliteStore or PostgresStore
    job = store.claim(holder="host:pid", now=time.time(), lease_seconds=60)   # oldest runnable job, leased, or None

Every read an API caller makes names its `Owner` (`owners.owner_filter` in the query): a user's query finds only its
own jobs, an admin's every job, so a job of someone else is answered exactly like one that does not exist. The
workers' and the janitor's queries are the queue's, not an owner's (`peek`, `claim`, `expired`, ...). A worker claims
the oldest runnable job of the owner with the fewest jobs running (fair share: one owner's long queue does not hold
up another owner's job).

Every state change of a running job names its lease holder (`WHERE lease_owner = $n`), so a worker that lost its lease
(it stalled, another took the job over) can never finish the job a second time. A finished job and its webhook
delivery are written in one transaction: the outbox never misses a job, and never has one twice. A job is inserted in
a durable transaction (on disk before its `202`).

Rows are read by the columns this release knows (`_job`, `_delivery`): a newer release may add columns (additive
migrations) and this one still runs beside it on one queue. Tables and columns are plain (`jobs.status`,
`jobs.created_at` in Unix seconds) so operators can query them, e.g. KEDA's
`SELECT COUNT(*) FROM jobs WHERE status = 'queued'`.
"""
from __future__ import annotations

import json
import logging
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from collections.abc import Collection

from whisper_common.db import Database, DuplicateKey, Params, StorageFull, Tx
from whisper_common.jobs.records import (
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
from whisper_common.jobs.retry import Backoff
from whisper_common.owners import Owner, owner_filter

__all__ = ["DuplicateKey", "Finish", "QueueState", "SqlStore", "StorageFull"]

logger = logging.getLogger("whisper_common.jobs.store")

JOB_COLUMNS = tuple(JobRow.model_fields)
DELIVERY_COLUMNS = tuple(DeliveryRow.model_fields)


def _job(row: dict[str, Any]) -> JobRow:
    return JobRow(**{name: row[name] for name in JOB_COLUMNS})


def _delivery(row: dict[str, Any]) -> DeliveryRow:
    return DeliveryRow(**{name: row[name] for name in DELIVERY_COLUMNS})


def scoped_idempotency_key(owner: str, key: str) -> str:
    """An Idempotency-Key as stored: the owner's, so another owner's same key is another key (owner names hold no
    `:`)."""
    return f"{owner}:{key}"


def receiver_of(url: str) -> str:
    """Scheme, host and port of a webhook URL: deliveries to one receiver go one at a time."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"
    except ValueError:
        return url[:200]


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


class QueueState(NamedTuple):
    counts: dict[str, int]  # jobs by status
    oldest_queued_created_at: float | None
    pending_deliveries: int  # webhook deliveries still to be made (first attempt or a retry)


class SqlStore:
    """The queue's queries on one database. `queue` names the service (`whisper_faster`, `whisperx`): services sharing
    a database or a DATA_DIR see and run only their own jobs."""

    def __init__(self, db: Database, queue: str) -> None:
        self.db = db
        self.queue = queue
        self.backend = db.backend
        self.skip_locked = db.skip_locked
        self.for_update = db.for_update

    def transaction(self, *, durable: bool = False) -> AbstractContextManager[Tx]:
        return self.db.transaction(durable=durable)

    def close(self) -> None:
        self.db.close()

    # --- submitting and reading ---

    def insert(self, job: JobRow) -> JobRow:
        """Insert a new job, durably (a `202` follows); DuplicateKey when its idempotency key exists (read that job
        with `by_idempotency_key`)."""
        values = job.model_dump()
        columns = ", ".join(JOB_COLUMNS)
        marks = ", ".join(f"${number}" for number in range(1, len(JOB_COLUMNS) + 1))
        with self.transaction(durable=True) as tx:
            tx.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", [values[name] for name in JOB_COLUMNS])
        return job

    def get(self, job_id: str, owner: Owner) -> JobRow | None:
        """The job, if it is `owner`'s to see."""
        p = Params()
        with self.transaction() as tx:
            rows = tx.execute(
                f"SELECT * FROM jobs WHERE id = {p(job_id)} AND queue = {p(self.queue)} AND {owner_filter(p, owner)}",
                p.values,
            )
        return _job(rows[0]) if rows else None

    def peek(self, job_id: str) -> JobRow | None:
        """The job, whoever owns it: for the worker and the janitor, never for an API caller."""
        with self.transaction() as tx:
            rows = tx.execute("SELECT * FROM jobs WHERE id = $1 AND queue = $2", (job_id, self.queue))
        return _job(rows[0]) if rows else None

    def by_idempotency_key(self, owner: str, key: str) -> JobRow | None:
        """The job `owner` submitted with this Idempotency-Key (another owner's same key is another key)."""
        with self.transaction() as tx:
            rows = tx.execute(
                "SELECT * FROM jobs WHERE idempotency_key = $1 AND queue = $2 AND owner = $3",
                (scoped_idempotency_key(owner, key), self.queue, owner),
            )
        return _job(rows[0]) if rows else None

    def count_active(self, owner: str) -> int:
        """The owner's jobs queued or running (its quota)."""
        with self.transaction() as tx:
            rows = tx.execute(
                "SELECT COUNT(*) AS n FROM jobs WHERE queue = $1 AND owner = $2 AND status IN ($3, $4)",
                (self.queue, owner, JobStatus.QUEUED.value, JobStatus.RUNNING.value),
            )
        return int(rows[0]["n"])

    def list(
        self, owner: Owner, status: JobStatus | None, limit: int, after: str | None
    ) -> tuple[list[JobRow], bool]:
        """The jobs `owner` may see, newest first; `after` is the id of the last job of the previous page."""
        p = Params()
        where = [f"queue = {p(self.queue)}", owner_filter(p, owner)]
        with self.transaction() as tx:
            if status is not None:
                where.append(f"status = {p(status.value)}")
            if after is not None:
                anchor_p = Params()
                anchor = tx.execute(
                    f"SELECT created_at FROM jobs WHERE id = {anchor_p(after)} AND queue = {anchor_p(self.queue)} "
                    f"AND {owner_filter(anchor_p, owner)}",
                    anchor_p.values,
                )
                if not anchor:
                    return [], False
                created_at = p(anchor[0]["created_at"])
                where.append(f"(created_at < {created_at} OR (created_at = {created_at} AND id < {p(after)}))")
            rows = tx.execute(
                f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT {p(limit + 1)}",
                p.values,
            )
        return [_job(row) for row in rows[:limit]], len(rows) > limit

    def deliveries(self, job_id: str) -> list[DeliveryView]:
        with self.transaction() as tx:
            deliveries = tx.execute(
                "SELECT * FROM webhook_deliveries WHERE job_id = $1 ORDER BY created_at, id", (job_id,)
            )
            attempts = tx.execute(
                "SELECT a.* FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id "
                "WHERE d.job_id = $1 ORDER BY a.attempt",
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
            by_status = tx.execute("SELECT status, COUNT(*) AS n FROM jobs WHERE queue = $1 GROUP BY status", (self.queue,))
            oldest = tx.execute(
                "SELECT MIN(created_at) AS t FROM jobs WHERE queue = $1 AND status = $2",
                (self.queue, JobStatus.QUEUED.value),
            )
            pending = tx.execute(
                "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE queue = $1 AND status = 'pending'", (self.queue,)
            )
        counts = {status.value: 0 for status in JobStatus}
        counts.update({row["status"]: int(row["n"]) for row in by_status})
        return QueueState(counts, oldest[0]["t"] if oldest else None, int(pending[0]["n"]))

    # --- canceling and deleting ---

    def cancel_or_delete(self, job_id: str, owner: Owner, now: float) -> tuple[JobRow | None, bool]:
        """Cancel a queued job (at once) or a running one (its worker stops at the next segment); delete a finished
        one. Returns (the job as it is now, deleted?); (None, False) when it is not `owner`'s to see."""
        p = Params()
        with self.transaction() as tx:
            rows = tx.execute(
                f"SELECT * FROM jobs WHERE id = {p(job_id)} AND queue = {p(self.queue)} AND {owner_filter(p, owner)}"
                f"{self.for_update}",
                p.values,
            )
            if not rows:
                return None, False
            job = _job(rows[0])
            if job.status in FINISHED:
                self._delete(tx, job_id)
                return job, True
            if job.status is JobStatus.RUNNING:
                tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = $1", (job_id,))
                job.cancel_requested = 1
                return job, False
            finished = self._finish(tx, job_id, None, Finish(JobStatus.CANCELED), now)
            return finished, False

    def _delete(self, tx: Tx, job_id: str) -> None:
        tx.execute(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE job_id = $1)",
            (job_id,),
        )
        tx.execute("DELETE FROM webhook_deliveries WHERE job_id = $1", (job_id,))
        tx.execute("DELETE FROM jobs WHERE id = $1", (job_id,))

    def erase_owner(self, owner: str) -> list[str]:
        """Remove every job of `owner` (running ones too: their worker finds the row gone and keeps nothing), their
        webhook deliveries and attempts, and the URLs its 410s disabled, leaving nothing of them in the database's
        files where it can (`Database.forget_deleted`). Returns the ids, whose files are to go."""
        with self.transaction() as tx:
            rows = tx.execute(
                f"SELECT id FROM jobs WHERE queue = $1 AND owner = $2{self.for_update}", (self.queue, owner)
            )
            ids = [row["id"] for row in rows]
            for job_id in ids:
                self._delete(tx, job_id)
            tx.execute("DELETE FROM webhook_disabled WHERE owner = $1", (owner,))
        self.db.forget_deleted()
        return ids

    def expired(self, finished_before: float, limit: int = 100) -> list[JobRow]:
        with self.transaction() as tx:
            rows = tx.execute(
                "SELECT * FROM jobs WHERE queue = $1 AND status IN ($2, $3, $4) AND finished_at < $5 "
                "ORDER BY finished_at LIMIT $6",
                [self.queue, *(status.value for status in FINISHED), finished_before, limit],
            )
        return [_job(row) for row in rows]

    def delete(self, job_id: str) -> None:
        with self.transaction() as tx:
            self._delete(tx, job_id)

    # --- the worker's side: leases ---

    def claim(self, holder: str, now: float, lease_seconds: float) -> JobRow | None:
        """Lease a queued job whose backoff is over (status running, attempts + 1): the oldest of the owner with the
        fewest jobs running, so that every owner's work moves on while another's queue is long."""
        with self.transaction() as tx:
            rows = tx.execute(
                "UPDATE jobs SET status = $1, lease_owner = $2, lease_expires_at = $3, attempts = attempts + 1, "
                "started_at = COALESCE(started_at, $4) WHERE id = ("
                "SELECT q.id FROM jobs q WHERE q.queue = $5 AND q.status = $6 AND q.run_after <= $4 ORDER BY "
                "(SELECT COUNT(*) FROM jobs r WHERE r.queue = q.queue AND r.owner = q.owner AND r.status = $1), "
                f"q.created_at, q.id LIMIT 1{self.skip_locked}) AND status = $6 RETURNING *",
                (JobStatus.RUNNING.value, holder, now + lease_seconds, now, self.queue, JobStatus.QUEUED.value),
            )
        return _job(rows[0]) if rows else None

    def renew(
        self, job_id: str, holder: str, expires_at: float, done: float, total: float | None
    ) -> bool | None:
        """Extend the lease and record progress. Returns whether a cancel was asked, or None when the lease is lost."""
        with self.transaction() as tx:
            rows = tx.execute(
                "UPDATE jobs SET lease_expires_at = $1, audio_seconds_done = $2, "
                "audio_seconds = COALESCE($3, audio_seconds) "
                "WHERE id = $4 AND lease_owner = $5 AND status = $6 RETURNING cancel_requested",
                (expires_at, done, total, job_id, holder, JobStatus.RUNNING.value),
            )
        return bool(rows[0]["cancel_requested"]) if rows else None

    def finish(self, job_id: str, holder: str, outcome: Finish, now: float) -> JobRow | None:
        """End a run whose lease `holder` still holds; with a webhook_url, queue its delivery in the same transaction.
        None when the lease was lost (the job is someone else's now, or already finished)."""
        with self.transaction() as tx:
            return self._finish(tx, job_id, holder, outcome, now)

    def _finish(self, tx: Tx, job_id: str, holder: str | None, outcome: Finish, now: float) -> JobRow | None:
        p = Params()
        assignments = (
            f"status = {p(outcome.status.value)}, finished_at = {p(now)}, result = {p(outcome.result)}, "
            f"error = {p(outcome.error_json())}, lease_owner = NULL, lease_expires_at = NULL, "
            f"audio_seconds = COALESCE({p(outcome.audio_seconds)}, audio_seconds), "
            f"audio_seconds_done = COALESCE({p(outcome.audio_seconds_done)}, audio_seconds_done)"
        )
        holder_clause = f"lease_owner = {p(holder)}" if holder is not None else "lease_owner IS NULL"
        rows = tx.execute(
            f"UPDATE jobs SET {assignments} WHERE id = {p(job_id)} "
            f"AND status IN ({p(JobStatus.QUEUED.value)}, {p(JobStatus.RUNNING.value)}) AND {holder_clause} RETURNING *",
            p.values,
        )
        if not rows:
            return None
        job = _job(rows[0])
        if job.webhook_url:
            delivery_id = new_delivery_id()
            tx.execute(
                "INSERT INTO webhook_deliveries (id, queue, job_id, url, receiver, event, payload, status, created_at, "
                "next_attempt_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8, 0)",
                (delivery_id, job.queue, job.id, job.webhook_url, receiver_of(job.webhook_url),
                 f"job.{job.status.value}", event_payload(job, delivery_id, now), now),
            )
        return job

    def set_audio(self, job_id: str, holder: str, audio_file: str) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET audio_file = $1 WHERE id = $2 AND lease_owner = $3", (audio_file, job_id, holder)
            )

    def retry_later(self, job_id: str, holder: str, run_after: float, message: str, code: str) -> bool:
        """Back to the queue after a transient failure (the error stays visible until the next run ends). False when
        the lease is lost or a cancel was asked meanwhile (the job is not requeued: its worker ends it canceled)."""
        error = json.dumps({"message": message, "code": code})
        with self.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET status = $1, lease_owner = NULL, lease_expires_at = NULL, run_after = $2, error = $3 "
                "WHERE id = $4 AND lease_owner = $5 AND status = $6 AND cancel_requested = 0",
                (JobStatus.QUEUED.value, run_after, error, job_id, holder, JobStatus.RUNNING.value),
            )
            return tx.rowcount == 1

    def release(self, job_id: str, holder: str, run_after: float) -> bool:
        """Give a job back without counting the attempt (shutdown, or the inference gate was full)."""
        with self.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET status = $1, lease_owner = NULL, lease_expires_at = NULL, run_after = $2, "
                "attempts = attempts - 1 WHERE id = $3 AND lease_owner = $4 AND status = $5",
                (JobStatus.QUEUED.value, run_after, job_id, holder, JobStatus.RUNNING.value),
            )
            return tx.rowcount == 1

    def recover_expired(self, now: float, backoff: Backoff) -> list[JobRow]:
        """Jobs whose worker died (lease expired): back to the queue after `backoff.delay(attempts)`, or failed when
        out of attempts, or canceled when a cancel was asked. Returns the jobs that finished here."""
        finished: list[JobRow] = []
        with self.transaction() as tx:
            rows = tx.execute(
                f"SELECT * FROM jobs WHERE queue = $1 AND status = $2 AND lease_expires_at < $3{self.skip_locked}",
                (self.queue, JobStatus.RUNNING.value, now),
            )
            for row in rows:  # each row on a savepoint of its own: one that cannot be recovered does not block the rest
                tx.execute("SAVEPOINT recover_row")
                try:
                    ended = self._recover(tx, _job(row), now, backoff)
                except Exception as exc:  # noqa: BLE001 - logged; the other expired jobs still recover
                    tx.execute("ROLLBACK TO SAVEPOINT recover_row")
                    logger.error("an expired job could not be recovered", extra={"job_id": row.get("id")}, exc_info=exc)
                    continue
                tx.execute("RELEASE SAVEPOINT recover_row")
                if ended is not None:
                    finished.append(ended)
        return finished

    def _recover(self, tx: Tx, job: JobRow, now: float, backoff: Backoff) -> JobRow | None:
        lost = f"the worker running it stopped (attempt {job.attempts} of {job.max_attempts})"
        if job.cancel_requested or job.attempts >= job.max_attempts:
            outcome = (
                Finish(JobStatus.CANCELED) if job.cancel_requested
                else Finish(JobStatus.FAILED, error_message=lost, error_code="worker_lost")
            )
            return self._finish(tx, job.id, job.lease_owner, outcome, now)
        tx.execute(
            "UPDATE jobs SET status = $1, lease_owner = NULL, lease_expires_at = NULL, run_after = $2, error = $3 "
            "WHERE id = $4 AND lease_owner = $5 AND status = $6",
            (JobStatus.QUEUED.value, now + backoff.delay(job.attempts),
             json.dumps({"message": lost, "code": "worker_lost"}), job.id, job.lease_owner, JobStatus.RUNNING.value),
        )
        return None

    # --- the webhook outbox ---

    def claim_delivery(
        self, holder: str, now: float, lease_seconds: float, busy_receivers: Collection[str] = ()
    ) -> DeliveryRow | None:
        """Lease the delivery due first, to a receiver not in `busy_receivers` (those this process is sending to)."""
        p = Params()
        lease_owner, expires, queue, at = p(holder), p(now + lease_seconds), p(self.queue), p(now)
        busy = ""
        if busy_receivers:
            busy = f" AND COALESCE(receiver, url) NOT IN ({', '.join(p(receiver) for receiver in busy_receivers)})"
        with self.transaction() as tx:
            rows = tx.execute(
                f"UPDATE webhook_deliveries SET lease_owner = {lease_owner}, lease_expires_at = {expires} WHERE id = ("
                f"SELECT id FROM webhook_deliveries WHERE queue = {queue} AND status = 'pending' AND "
                f"next_attempt_at <= {at} AND (lease_expires_at IS NULL OR lease_expires_at < {at}){busy} "
                f"ORDER BY next_attempt_at LIMIT 1{self.skip_locked}) RETURNING *",
                p.values,
            )
        return _delivery(rows[0]) if rows else None

    def job_owner(self, job_id: str) -> str | None:
        with self.transaction() as tx:
            rows = tx.execute("SELECT owner FROM jobs WHERE id = $1", (job_id,))
        return rows[0]["owner"] if rows else None

    def url_disabled(self, owner: str, url: str) -> bool:
        """Whether a 410 disabled `url` for `owner` (or for everyone, before owners existed)."""
        with self.transaction() as tx:
            return bool(tx.execute(
                "SELECT id FROM webhook_disabled WHERE url = $1 AND owner IN ($2, '')", (url, owner)
            ))

    def disabled_urls(self, owner: Owner) -> list[dict[str, Any]]:
        """The URLs `owner` may re-enable (an admin: every owner's): id, owner, url, disabled_at."""
        p = Params()
        with self.transaction() as tx:
            return tx.execute(
                f"SELECT id, owner, url, disabled_at FROM webhook_disabled WHERE {owner_filter(p, owner)} "
                "ORDER BY disabled_at, id",
                p.values,
            )

    def enable_url(self, disabled_id: str, owner: Owner) -> bool:
        """Deliver to a disabled URL again; False when no such entry is `owner`'s to see."""
        p = Params()
        with self.transaction() as tx:
            tx.execute(
                f"DELETE FROM webhook_disabled WHERE id = {p(disabled_id)} AND {owner_filter(p, owner)}", p.values
            )
            return tx.rowcount == 1

    def record_attempt(
        self,
        delivery: DeliveryRow,
        holder: str,
        now: float,
        outcome: str,
        status_code: int | None,
        error: str | None,
        next_attempt_at: float | None,
    ) -> bool:
        """Record one attempt and move the delivery on: `delivered`/`failed`/`disabled` end it, `retrying` schedules
        the next attempt at `next_attempt_at`. False when this holder no longer holds the delivery's lease."""
        status = {"retrying": "pending"}.get(outcome, outcome)
        with self.transaction() as tx:
            rows = tx.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = $1, next_attempt_at = $2, "
                "lease_owner = NULL, lease_expires_at = NULL WHERE id = $3 AND lease_owner = $4 RETURNING attempts",
                (status, next_attempt_at if next_attempt_at is not None else now, delivery.id, holder),
            )
            if not rows:
                return False
            tx.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, at, outcome, status_code, error) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                (delivery.id, rows[0]["attempts"], now, outcome, status_code, error),
            )
            if outcome == "disabled" and status_code == 410:
                owner = tx.execute("SELECT owner FROM jobs WHERE id = $1", (delivery.job_id,))
                if owner:
                    tx.execute(
                        "INSERT INTO webhook_disabled (id, owner, url, disabled_at) VALUES ($1, $2, $3, $4) "
                        "ON CONFLICT (owner, url) DO NOTHING",
                        (f"whd_{uuid.uuid4().hex}", owner[0]["owner"], delivery.url, now),
                    )
        return True
