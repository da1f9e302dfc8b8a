"""One contract for both stores (SQLite file, real PostgreSQL server): leases, the never-twice rule, recovery of
expired leases, idempotency keys, queues kept apart, the outbox written with the finished job."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.jobs.postgres import postgres_server
from whisper_common.jobs.records import JobRow, JobStatus, new_job_id
from whisper_common.jobs.postgres import PostgresStore
from whisper_common.jobs.retry import Backoff
from whisper_common.jobs.sqlite import SqliteStore
from whisper_common.jobs.store import DuplicateKey, Finish, SqlStore, scoped_idempotency_key
from whisper_common.owners import ANONYMOUS, Owner, Role

NO_BACKOFF = Backoff(0)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SqlStore]]:
    stores: list[SqlStore] = []
    schema = f"t{time.monotonic_ns()}"

    def make(queue: str = "whisper_faster") -> SqlStore:
        if request.param == "sqlite":
            store: SqlStore = SqliteStore(tmp_path / "jobs.sqlite3", queue)
        else:  # a schema of its own in the module's server: every test starts from empty tables
            url = request.getfixturevalue("postgres_url")
            _create_schema(url, schema)
            store = PostgresStore(f"{url}?options=-csearch_path%3D{schema}", queue)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def _create_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")


def _job(queue: str = "whisper_faster", **fields: object) -> JobRow:
    now = time.time()
    values = {"id": new_job_id(), "queue": queue, "status": JobStatus.QUEUED, "created_at": now, "run_after": now,
              "max_attempts": 2, **fields}
    return JobRow(**values)  # type: ignore[arg-type]


def test_a_job_is_claimed_once_and_only_its_owner_finishes_it(make_store) -> None:
    store = make_store()
    job = store.insert(_job(webhook_url="http://hooks.example/x"))
    claims: list[JobRow | None] = []
    workers = [threading.Thread(target=lambda: claims.append(store.claim("w", time.time(), 30))) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    taken = [claim for claim in claims if claim is not None]
    assert len(taken) == 1 and taken[0].id == job.id and taken[0].attempts == 1

    assert store.finish(job.id, "someone-else", Finish(JobStatus.SUCCEEDED, result="{}"), time.time()) is None
    done = store.finish(job.id, "w", Finish(JobStatus.SUCCEEDED, result="{}"), time.time())
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert store.finish(job.id, "w", Finish(JobStatus.SUCCEEDED, result="{}"), time.time()) is None  # never twice
    [delivery] = store.deliveries(job.id)
    assert delivery.event == "job.succeeded" and delivery.status == "pending"


def test_an_expired_lease_goes_back_to_the_queue_then_fails_when_out_of_attempts(make_store) -> None:
    store = make_store()
    job = store.insert(_job())
    now = time.time()
    assert store.claim("dead", now, 1) is not None
    assert store.recover_expired(now + 0.5, NO_BACKOFF) == []  # not expired yet
    assert store.recover_expired(now + 2, NO_BACKOFF) == []  # expired: queued again, attempt 1 of 2 used
    again = store.peek(job.id)
    assert again is not None and again.status is JobStatus.QUEUED and again.lease_owner is None
    assert json.loads(again.error or "{}")["code"] == "worker_lost"
    assert store.renew(job.id, "dead", now + 60, 1.0, 2.0) is None  # the dead owner's lease is gone
    second = store.claim("also-dead", now + 3, 1)
    assert second is not None and second.attempts == 2
    [failed] = store.recover_expired(now + 5, NO_BACKOFF)
    assert failed.status is JobStatus.FAILED and json.loads(failed.error or "{}")["code"] == "worker_lost"


def test_an_expired_lease_is_requeued_after_the_delay_the_retry_policy_gives(make_store) -> None:
    """The store computes no backoff: recovery puts the job back at `now + backoff.delay(attempts)`."""
    store = make_store()
    job = store.insert(_job(max_attempts=3))
    now = time.time()
    store.claim("dead", now, 1)
    store.recover_expired(now + 2, Backoff(100, jitter=0))
    again = store.peek(job.id)
    assert again is not None and again.status is JobStatus.QUEUED
    assert again.run_after == pytest.approx(now + 2 + 100)
    assert store.claim("w", now + 2 + 99, 30) is None and store.claim("w", now + 2 + 101, 30) is not None


def test_cancel_of_a_running_job_is_a_flag_its_worker_reads(make_store) -> None:
    store = make_store()
    job = store.insert(_job())
    store.claim("w", time.time(), 30)
    current, deleted = store.cancel_or_delete(job.id, ANONYMOUS, time.time())
    assert current is not None and not deleted and current.status is JobStatus.RUNNING
    assert store.renew(job.id, "w", time.time() + 30, 5.0, 10.0) is True
    queued = store.insert(_job())
    canceled, _ = store.cancel_or_delete(queued.id, ANONYMOUS, time.time())
    assert canceled is not None and canceled.status is JobStatus.CANCELED


def test_a_job_whose_cancel_was_asked_is_not_requeued_after_a_transient_failure(make_store) -> None:
    store = make_store()
    job = store.insert(_job())
    store.claim("w", time.time(), 30)
    store.cancel_or_delete(job.id, ANONYMOUS, time.time())
    assert store.retry_later(job.id, "w", time.time(), "the server is busy", "server_busy") is False
    assert store.claim("other", time.time() + 60, 30) is None  # not back in the queue
    ended = store.finish(job.id, "w", Finish(JobStatus.CANCELED), time.time())
    assert ended is not None and ended.status is JobStatus.CANCELED
    other = store.insert(_job())
    store.claim("w", time.time(), 30)
    assert store.retry_later(other.id, "w", time.time(), "the server is busy", "server_busy") is True


def test_idempotency_keys_and_queues_are_per_service(make_store) -> None:
    faster, whisperx = make_store("whisper_faster"), make_store("whisperx")
    key = scoped_idempotency_key("team-a", "k")
    first = faster.insert(_job(owner="team-a", idempotency_key=key))
    with pytest.raises(DuplicateKey):
        faster.insert(_job(owner="team-a", idempotency_key=key))
    other = whisperx.insert(_job("whisperx", owner="team-a", idempotency_key=key))  # another service's queue
    assert faster.by_idempotency_key("team-a", "k").id == first.id  # type: ignore[union-attr]
    assert whisperx.peek(first.id) is None and faster.peek(other.id) is None
    assert whisperx.claim("x", time.time(), 30).id == other.id  # type: ignore[union-attr]
    assert whisperx.claim("x", time.time(), 30) is None
    assert faster.queue_state().counts["queued"] == 1 and whisperx.queue_state().counts["running"] == 1


def test_one_job_that_cannot_be_recovered_does_not_block_the_others(make_store) -> None:
    """Metadata too deep to serialise (written before submit refused it) breaks that job's webhook payload: recovery
    skips it (rolled back to its savepoint, logged) and still recovers the other expired job."""
    store = make_store()
    deep = "1"
    for _ in range(600):
        deep = '{"a":' + deep + "}"
    bad = store.insert(_job(max_attempts=1, webhook_url="http://hooks.example/x", metadata=deep))
    good = store.insert(_job(max_attempts=1, webhook_url="http://hooks.example/y"))
    now = time.time()
    assert store.claim("dead", now, 1) is not None and store.claim("dead", now, 1) is not None
    [recovered] = store.recover_expired(now + 2, NO_BACKOFF)
    assert recovered.id == good.id and recovered.status is JobStatus.FAILED
    assert len(store.deliveries(good.id)) == 1
    stuck = store.peek(bad.id)
    assert stuck is not None and stuck.status is JobStatus.RUNNING and store.deliveries(bad.id) == []


# --- owners (issue 23): every read an API caller makes is scoped by its Owner in the query ---

TEAM_A, TEAM_B, ADMIN = Owner("team-a"), Owner("team-b"), Owner("boss", Role.ADMIN)


def test_an_owner_reads_lists_and_cancels_only_its_own_jobs_and_an_admin_all(make_store) -> None:
    store = make_store()
    mine = store.insert(_job(owner="team-a"))
    theirs = store.insert(_job(owner="team-b"))
    legacy = store.insert(_job())  # from before owners: only an admin sees it
    assert store.get(mine.id, TEAM_A) is not None and store.get(theirs.id, TEAM_A) is None
    assert store.get(legacy.id, TEAM_A) is None and store.get(legacy.id, ADMIN) is not None
    assert [job.id for job in store.list(TEAM_A, None, 10, None)[0]] == [mine.id]
    assert {job.id for job in store.list(ADMIN, None, 10, None)[0]} == {mine.id, theirs.id, legacy.id}
    assert store.list(TEAM_A, None, 10, theirs.id) == ([], False)  # another owner's job is no page anchor
    assert store.cancel_or_delete(theirs.id, TEAM_A, time.time()) == (None, False)
    assert store.peek(theirs.id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    canceled, _ = store.cancel_or_delete(theirs.id, ADMIN, time.time())
    assert canceled is not None and canceled.status is JobStatus.CANCELED
    assert store.count_active("team-a") == 1 and store.count_active("team-b") == 0


def test_idempotency_keys_are_per_owner(make_store) -> None:
    store = make_store()
    first = store.insert(_job(owner="team-a", idempotency_key=scoped_idempotency_key("team-a", "k")))
    other = store.insert(_job(owner="team-b", idempotency_key=scoped_idempotency_key("team-b", "k")))
    assert store.by_idempotency_key("team-a", "k").id == first.id  # type: ignore[union-attr]
    assert store.by_idempotency_key("team-b", "k").id == other.id  # type: ignore[union-attr]
    assert store.by_idempotency_key("team-c", "k") is None


def test_a_worker_claims_for_the_owner_with_the_fewest_jobs_running(make_store) -> None:
    store = make_store()
    for _ in range(3):
        store.insert(_job(owner="busy"))
    late = store.insert(_job(owner="quiet"))
    now = time.time()
    assert store.claim("w", now, 30).owner == "busy"  # type: ignore[union-attr]
    assert store.claim("w", now, 30).id == late.id  # type: ignore[union-attr]  # not busy's older second job


def test_erasing_an_owner_removes_its_jobs_deliveries_and_disabled_urls(make_store) -> None:
    store = make_store()
    done = store.insert(_job(owner="team-a", webhook_url="http://hooks.example/a?token=t"))
    running = store.insert(_job(owner="team-a"))
    kept = store.insert(_job(owner="team-b", webhook_url="http://hooks.example/b"))
    now = time.time()
    store.claim("w", now, 30)
    store.finish(done.id, "w", Finish(JobStatus.SUCCEEDED, result="{}"), now)
    store.claim("w", now, 30)
    delivery = store.claim_delivery("outbox", now, 30)
    assert delivery is not None and delivery.job_id == done.id
    store.record_attempt(delivery, "outbox", now, "disabled", 410, "gone", None)
    assert store.url_disabled("team-a", delivery.url) and not store.url_disabled("team-b", delivery.url)
    assert sorted(store.erase_owner("team-a")) == sorted([done.id, running.id])
    assert store.peek(done.id) is None and store.peek(running.id) is None and store.peek(kept.id) is not None
    assert store.deliveries(done.id) == [] and not store.url_disabled("team-a", delivery.url)
    assert store.disabled_urls(ADMIN) == []


def test_a_url_a_410_disabled_is_reenabled_by_its_owner_or_an_admin(make_store) -> None:
    store = make_store()
    for owner in ("team-a", "team-b"):
        now = time.time()
        store.insert(_job(owner=owner, webhook_url="http://hooks.example/gone"))
        job = store.claim("w", time.time(), 30)
        store.finish(job.id, "w", Finish(JobStatus.SUCCEEDED, result="{}"), now)  # type: ignore[union-attr]
        delivery = store.claim_delivery("outbox", now, 30)
        store.record_attempt(delivery, "outbox", now, "disabled", 410, "gone", None)  # type: ignore[arg-type]
    [entry_a] = store.disabled_urls(TEAM_A)
    assert entry_a["owner"] == "team-a" and len(store.disabled_urls(ADMIN)) == 2
    assert store.enable_url(entry_a["id"], TEAM_B) is False  # not team-b's entry
    assert store.enable_url(entry_a["id"], TEAM_A) is True
    assert not store.url_disabled("team-a", "http://hooks.example/gone")
    assert store.url_disabled("team-b", "http://hooks.example/gone")
    [entry_b] = store.disabled_urls(TEAM_B)
    assert store.enable_url(entry_b["id"], ADMIN) is True and store.disabled_urls(ADMIN) == []


def test_the_outbox_claims_past_a_receiver_it_is_already_sending_to(make_store) -> None:
    store = make_store()
    for url in ("http://slow.example/1", "http://slow.example/2", "https://fast.example:8443/hook"):
        store.insert(_job(owner="team-a", webhook_url=url))
        job = store.claim("w", time.time(), 30)
        store.finish(job.id, "w", Finish(JobStatus.SUCCEEDED, result="{}"), time.time())  # type: ignore[union-attr]
    now = time.time()
    first = store.claim_delivery("outbox", now, 30)
    assert first is not None and first.receiver == "http://slow.example:80"
    second = store.claim_delivery("outbox", now, 30, busy_receivers=[first.receiver])
    assert second is not None and second.receiver == "https://fast.example:8443"
    assert store.claim_delivery("outbox", now, 30, busy_receivers=[first.receiver, second.receiver]) is None
