"""The reboot drill: with jobs queued and one running, the deployment's processes die at once (`kill -9` of each
service container's process and of the proxy), the proxy is started again with the command line `make up` uses
without systemd (what the unit's ExecStart or the @reboot line of docs/deployment.md runs), and nothing else happens:
no request, through Nginx or to the proxy's routes (only its status and metrics pages, which wake nothing, and the jobs'
rows read inside a container once the proxy has started it).

- whisper-faster (the success path): every job finishes; the queued ones start within a minute of the proxy's start,
  the interrupted one once its lease (JOB_LEASE_SECONDS, 15 s here) has run out. The time from the proxy's start to
  the first queued job running is printed (docs/benchmarks.md).
- whisperx (the failure path): its host port is taken by another program when the proxy starts, so the resume fails;
  the proxy's metrics then carry what WhisperWakeFailed alerts on (autostart_wakes_total{outcome!="ok"} and its
  `_created` series, deploy/prometheus/whisper-alerts.yml, tests/deploy/test_alerts.py) and its status page the
  reason; the proxy tries the resume again by itself (10 s later, then doubling), and once the port is free again
  one of those tries starts it, still with no request, and its queued job finishes.

dockerd is killed too (SIGKILL) and started again with scripts/ensure-dockerd.sh before the proxy, in CI (`CI` set, as
.ci/run sets it: the machine is the suite's own) or with WHISPER_TEST_RESTART_DOCKERD=1. Elsewhere it is left running
(WHISPER_TEST_RESTART_DOCKERD=0, the default outside CI): a developer's engine is shared with other test sessions whose
containers a restart would stop; the state it leaves our containers in (exited, not restarted, as `restart: "no"`
wants) is what `kill -9` of their processes leaves too, which the drill checks either way.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.containers.conftest import BuiltImages
from tests.containers.deployment import (
    HOSTS,
    Deployment,
    exclusive_deployment,
    job_views,
    long_recording,
    proxy_command,
    proxy_events,
    require_stock_nginx,
    submit_job,
    wait_for_jobs,
)
from tests.containers.docker_cli import CONTAINERS, docker, inspect, running, wait_until
from tests.stack.harness import require_nginx
from tests.support import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.stack]

LEASE_SECONDS = 15
DOCKERD_PIDFILE = Path(os.environ.get("DOCKERD_STATE_DIR", "/tmp/ensure-dockerd")) / "dockerd.pid"
JOBS_QUERY = ("import json, sqlite3; rows = sqlite3.connect('/data/jobs.sqlite3').execute("
              "'SELECT id, status, started_at, attempts FROM jobs').fetchall(); print(json.dumps(rows))")


@pytest.fixture
def deployment(tmp_path: Path, built_images: BuiltImages) -> Iterator[Deployment]:
    require_nginx()
    require_stock_nginx()
    with exclusive_deployment():
        deployment = Deployment(tmp_path)
        deployment.idle_timeout = 300
        deployment.extra_env = {"NGINX_RATE_LIMIT": "0", "JOB_LEASE_SECONDS": str(LEASE_SECONDS),
                                "JOB_RETRY_SECONDS": "2"}
        try:
            yield deployment
        finally:
            deployment.cleanup(deployment.projects() or {"whisper-faster", "whisperfaster", "whisperx"})


def jobs_in_database(container: str) -> dict[str, dict]:
    """The jobs as the service's own database has them, read inside its running container (no HTTP request)."""
    out = docker("exec", container, "python", "-c", JOBS_QUERY, timeout=60, check=False)
    if out.returncode != 0:
        return {}  # the container stopped or is starting
    return {row[0]: {"status": row[1], "started_at": row[2], "attempts": row[3]} for row in json.loads(out.stdout)}


def what_the_host_shows(deployment: Deployment) -> str:
    """What an operator would look at when the resume does not happen (for a failure message: the CI machine's files
    are gone once the run ends): the proxy's status page, its last log lines and stderr, the containers' states and
    the service's own last log lines."""
    status = proxy_page(deployment, "status")
    parts = [f"proxy status: {status.text if status is not None else 'no answer'}"]
    events = proxy_events(deployment)[-25:]
    parts.append("proxy log (last 25):\n" + "\n".join(json.dumps(event) for event in events))
    stderr = deployment.state_dir / "autostart.err"
    if stderr.is_file():
        parts.append("proxy stderr (end):\n" + stderr.read_text(errors="replace")[-3000:])
    for container in CONTAINERS.values():
        info = inspect(container) or {}
        parts.append(f"{container}: {json.dumps(info.get('State'))}")
        logs = docker("logs", "--tail", "20", container, check=False, timeout=30)
        parts.append(f"{container} log (last 20):\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
    return "\n".join(parts)


def explained(deployment: Deployment, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_until, and a timeout says what the host shows."""
    try:
        wait_until(predicate, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{what_the_host_shows(deployment)}") from None


def proxy_page(deployment: Deployment, page: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{deployment.proxy_port}/_autostart/{page}", timeout=5)
    except httpx.HTTPError:
        return None


def failed_wakes(deployment: Deployment, service: str) -> dict[str, float]:
    """The proxy's series WhisperWakeFailed reads, for `service`: autostart_wakes_total / _created with an outcome
    other than ok (name with labels -> value)."""
    answer = proxy_page(deployment, "metrics")
    if answer is None or answer.status_code != 200:
        return {}
    found = {}
    for line in answer.text.splitlines():
        if line.startswith(("autostart_wakes_total{", "autostart_wakes_created{")) and f'service="{service}"' in line \
                and 'outcome="ok"' not in line:
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


@pytest.mark.timeout(2400)
def test_reboot_drill_jobs_resume_without_a_request_and_a_failed_resume_alerts(deployment: Deployment,
                                                                             tmp_path: Path) -> None:
    started = time.monotonic()
    up = deployment.make("up")
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]

    # 1. Work under way: on whisper-faster a long job running and two queued behind it (one worker); whisperx has run
    #    a job (so its container ran) and holds one more.
    submitted: dict[str, str] = {}
    with deployment.client() as http:
        first_x = submit_job(http, deployment, "whisperx")
        [done_x] = wait_for_jobs(http, deployment, "whisperx", {first_x}, 300).values()
        assert done_x["status"] == "succeeded", done_x
        long_job = submit_job(http, deployment, "whisper-faster", long_recording(tmp_path, 4))
        submitted[long_job] = "whisper-faster"
        for _ in range(2):
            submitted[submit_job(http, deployment, "whisper-faster")] = "whisper-faster"
        queued_x = submit_job(http, deployment, "whisperx")
        deadline = time.monotonic() + 300
        while job_views(http, deployment, "whisper-faster")[long_job]["status"] != "running":
            assert time.monotonic() < deadline, "the long job never ran"
            time.sleep(0.5)
        before = job_views(http, deployment, "whisper-faster")
    unfinished = {job_id: before[job_id]["status"] for job_id in submitted if before[job_id]["status"] in
                  ("queued", "running")}
    queued = {job_id for job_id, status in unfinished.items() if status == "queued"}
    assert unfinished.get(long_job) == "running" and len(queued) == 2, unfinished

    # 2. The host goes down: every process of the deployment dies at once.
    for container in CONTAINERS.values():
        info = inspect(container)
        assert info and info["State"]["Running"], f"{container} is not running before the 'reboot'"
        os.kill(int(info["State"]["Pid"]), signal.SIGKILL)
    os.kill(int((deployment.state_dir / "autostart.pid").read_text()), signal.SIGKILL)
    if os.environ.get("WHISPER_TEST_RESTART_DOCKERD", "1" if os.environ.get("CI") else "0") == "1":
        pidfile = DOCKERD_PIDFILE if DOCKERD_PIDFILE.is_file() else Path("/var/run/docker.pid")  # else dockerd's own
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        time.sleep(2)
        restarted_engine = subprocess.run([str(ROOT / "scripts" / "ensure-dockerd.sh"), "180"], capture_output=True,
                                          text=True)
        assert restarted_engine.returncode == 0, restarted_engine.stderr
    wait_until(lambda: not any(running(c) for c in CONTAINERS.values()), 60, "the containers to be down")
    for container in CONTAINERS.values():
        assert (inspect(container) or {})["State"]["Status"] == "exited", "not what a reboot leaves"

    # 3. Another program has whisperx's port when the proxy starts; the proxy starts as `make up` starts it. No
    #    request from here on, until the operator's one in step 5.
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", deployment.service_ports["whisperx"]))
    blocker.listen()
    log = (deployment.state_dir / "autostart.err").open("ab")
    restarted = time.time()
    proxy = subprocess.Popen(proxy_command(deployment), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
    log.close()
    # Reaped as soon as it exits, as init reaps the one `make up` leaves in the background: an unreaped child stays a
    # zombie, which `kill -0` still finds, so `make down` waited its whole 20 s for a proxy that had already exited
    # (then said it ignored SIGTERM and killed it).
    threading.Thread(target=proxy.wait, daemon=True).start()

    # 4. whisper-faster resumes by itself. Watched from outside only: the proxy's status page, and each job's row once
    #    the container runs. A job that was running when the host went down keeps its first started_at; that it runs
    #    again shows as one more attempt.
    ready_after: dict[str, float] = {}
    rerun_after: dict[str, float] = {}
    seen: dict[str, dict] = {}
    container = CONTAINERS["whisper-faster"]
    deadline = time.monotonic() + 420
    while len(seen) < len(submitted) or any(job["status"] != "succeeded" for job in seen.values()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"whisper-faster's jobs not finished 7 min after the restart: {seen}\n"
                                 + what_the_host_shows(deployment))
        now = time.time()
        status = proxy_page(deployment, "status")
        if status is not None and status.status_code == 200:
            for host, state in status.json()["services"].items():
                if state["state"] == "ready":
                    ready_after.setdefault(host, now - restarted)
        if running(container):
            rows = jobs_in_database(container)
            for job_id in (j for j in submitted if j in rows):
                seen[job_id] = rows[job_id]
                if unfinished.get(job_id) == "running" and rows[job_id]["attempts"] > before[job_id]["attempts"]:
                    rerun_after.setdefault(job_id, now - restarted)
        time.sleep(0.5)
    first_queued = min(seen[job_id]["started_at"] for job_id in queued) - restarted
    assert all(seen[job_id]["started_at"] >= restarted for job_id in queued), seen
    assert first_queued < 60, f"the first queued job started {first_queued:.0f} s after the proxy"
    assert set(rerun_after) == {long_job}, (rerun_after, unfinished)
    assert rerun_after[long_job] < 60 + LEASE_SECONDS, rerun_after
    # The run the crash interrupted counts as an attempt (a run released by a stop would not).
    assert seen[long_job]["attempts"] == before[long_job]["attempts"] + 1, seen[long_job]
    resumed = [e for e in proxy_events(deployment) if e["event"] == "service resumed after the proxy started"]
    assert [e["service"] for e in resumed] == ["whisper-faster"], resumed
    assert HOSTS["whisper-faster"] in ready_after, ready_after

    # 5. whisperx did not resume: the proxy says so where an alert looks, its queued job waits, and the proxy tries
    #    the resume again by itself (10 s after the failure, then doubling).
    def failed_tries() -> float:
        return sum(value for name, value in failed_wakes(deployment, "whisperx").items()
                   if name.startswith("autostart_wakes_total"))

    wait_until(lambda: failed_tries() >= 1, 120, "a failed wake of whisperx in the proxy's metrics")
    series = failed_wakes(deployment, "whisperx")
    [failed_at] = [value - restarted for name, value in series.items() if name.startswith("autostart_wakes_created")]
    assert failed_at >= 0, series
    whisperx_status = proxy_page(deployment, "status").json()["services"][HOSTS["whisperx"]]  # type: ignore[union-attr]
    assert whisperx_status["state"] != "ready" and whisperx_status["lastError"], whisperx_status
    assert whisperx_status["resumePending"] and whisperx_status["resumeRetryInSeconds"] is not None, whisperx_status
    explained(deployment, lambda: failed_tries() >= 2, 60, "whisperx's resume tried again without a request")
    assert not running(CONTAINERS["whisperx"])

    # The runbook's cause goes away (the port is freed): the proxy's next try resumes whisperx, still with no request,
    # and its queued job runs (read through Nginx once the service is up).
    blocker.close()
    freed = time.time()
    explained(deployment, lambda: running(CONTAINERS["whisperx"]), 120, "whisperx resumed by the proxy's next try")
    resumed_x_after = time.time() - freed
    with deployment.client() as http:
        [after] = wait_for_jobs(http, deployment, "whisperx", {queued_x}, 300).values()
    assert after["status"] == "succeeded", after

    print(f"\nreboot drill: {time.monotonic() - started:.0f} s in all; services ready after "
          f"{ {h: round(t, 1) for h, t in ready_after.items()} } s from the proxy's start; the first queued job started "
          f"after {first_queued:.1f} s; the interrupted one ran again after {rerun_after[long_job]:.1f} s (lease "
          f"{LEASE_SECONDS} s); whisperx's resume failed after {failed_at:.1f} s and, tried again, started "
          f"{resumed_x_after:.1f} s after its port was freed")
