"""A queue shared through a real PostgreSQL server (Debian's binaries, started by the test): two whisper-faster
processes with one DATA_DIR take 20 jobs between them, each job runs once, and killing one process mid-job loses
nothing (the other takes the job over when its lease expires)."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.jobs.conftest import start_jobs_server
from tests.jobs.helpers import submit, wait_for, wait_for_activity
from tests.jobs.postgres import postgres_server
from tests.support import ARTIFACTS, fixture_path

JOBS = 20


@pytest.fixture()
def database() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def _log_events(log_name: str, message: str) -> list[str]:
    ids = []
    for line in (ARTIFACTS / f"{log_name}.log").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == message:
            ids.append(record["job_id"])
    return ids


def _running_owners(database: str) -> dict[str, str]:
    with psycopg.connect(database) as connection:
        rows = connection.execute("SELECT id, lease_owner FROM jobs WHERE status = 'running'").fetchall()
    return {job_id: owner for job_id, owner in rows}


def test_two_processes_share_one_queue_and_a_killed_one_loses_nothing(database: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "shared-data"
    run = uuid.uuid4().hex[:8]
    names = (f"jobs-pg-a-{run}", f"jobs-pg-b-{run}")
    env = {"JOBS_DATABASE_URL": database}
    with start_jobs_server(names[0], data_dir, **env) as first, start_jobs_server(names[1], data_dir, **env) as second:
        clients = [first.client(), second.client()]
        ids = [submit(clients[i % 2], fixture_path("hotwords.mp3"), metadata={"i": i}).json()["id"] for i in range(JOBS)]
        wait_for_activity(clients[0], lambda body: body["busy"] is True)  # the shared queue, from either process

        prefix = f"{socket.gethostname()}:{first.process.pid}:"
        deadline = time.monotonic() + 120
        victim = None
        while time.monotonic() < deadline and victim is None:  # kill the first process while it runs a job
            if len(_log_events(names[0], "job finished")) >= JOBS // 4:
                victim = next((job for job, owner in _running_owners(database).items() if owner.startswith(prefix)), None)
            time.sleep(0.02)
        assert victim is not None, "the first process never got that far"
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait()

        jobs = [wait_for(clients[1], job_id, timeout=240) for job_id in ids]
        for client in clients:
            client.close()

    assert [job["status"] for job in jobs] == ["succeeded"] * JOBS
    assert [job["metadata"]["i"] for job in jobs] == list(range(JOBS))
    attempts = {job["id"]: job["attempts"] for job in jobs}
    assert attempts.pop(victim) == 2
    assert set(attempts.values()) == {1}

    finished_a, finished_b = _log_events(names[0], "job finished"), _log_events(names[1], "job finished")
    assert finished_a and finished_b, "both processes took work"
    assert victim not in finished_a and victim in finished_b
    assert sorted(finished_a + finished_b) == sorted(ids)  # each job finished once, by one process
    started = Counter(_log_events(names[0], "job started") + _log_events(names[1], "job started"))
    assert started[victim] == 2 and all(started[job_id] == 1 for job_id in ids if job_id != victim)

    with psycopg.connect(database) as connection:  # the count KEDA's scaler runs (docs/jobs.md)
        queued = connection.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND queue = 'whisper_faster'")
        assert queued.fetchone() == (0,)
