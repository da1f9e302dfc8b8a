"""Jobs through the whole local stack (Nginx → auto-start proxy → whisper-faster started on demand): a job submitted
to a sleeping service wakes it, the proxy does not stop the service while the job runs past the idle timeout (it asks
GET /health/activity), and stops it once the job is done. The job is watched on the service's own port, so the
polling does not count as traffic that would keep the service awake. A 500 MiB upload through Nginx gets its 202
once the whole file is stored (499 MiB of file: the form around it must fit the 500 MiB body limit)."""
from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts.stack.local_stack import LocalStack
from tests.jobs.helpers import long_audio, submit
from tests.stack.harness import LoopbackTransport, running_local_stack
from tests.support import fixture_path

pytestmark = pytest.mark.stack

IDLE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    run_dir = tmp_path_factory.mktemp("jobs-stack")
    service_env = {"HF_HUB_OFFLINE": "1", "DATA_DIR": str(run_dir / "data")}
    with running_local_stack(run_dir, service_env, idle_timeout=IDLE_TIMEOUT) as local:
        yield local


def _state(stack: LocalStack) -> str:
    status = httpx.get(f"http://127.0.0.1:{stack.settings.proxy_port}/_autostart/status", timeout=5).json()
    return str(status["services"][stack.settings.whisper_host]["state"])


def _through_nginx(stack: LocalStack) -> httpx.Client:
    assert stack.credentials is not None
    return httpx.Client(
        base_url=f"https://{stack.settings.whisper_host}:{stack.settings.https_port}",
        transport=LoopbackTransport(verify=ssl.create_default_context(cafile=str(stack.paths.cert))),
        auth=(stack.credentials.user, stack.credentials.password),
        timeout=300,
    )


def _postponed_stops(stack: LocalStack) -> float:
    metrics = httpx.get(f"http://127.0.0.1:{stack.settings.proxy_port}/_autostart/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
        if line.startswith("autostart_stops_postponed_total{") and 'service="whisper-faster"' in line
    )


def test_a_job_wakes_the_service_which_stays_up_while_it_runs_then_stops(stack: LocalStack, tmp_path: Path) -> None:
    assert _state(stack) == "stopped"
    audio = long_audio(fixture_path("dev00.wav"), tmp_path / "long.wav", repeats=3)  # 90 s: seconds past 1 s idle
    with _through_nginx(stack) as through_nginx:
        accepted = submit(through_nginx, audio)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]

    # Straight to the service, as the proxy would send it: from loopback (trusted) with the user Nginx checked.
    assert stack.credentials is not None
    direct = httpx.Client(base_url=f"http://127.0.0.1:{stack.settings.whisper_faster_port}", timeout=10,
                          headers={"X-Whisper-User": stack.credentials.user})
    past_idle = False
    started = time.monotonic()
    while True:
        try:
            job = direct.get(f"/v1/jobs/{job_id}").json()
        except httpx.ConnectError:
            # The proxy may stop the service between the job's end and this poll (idle is 1 s). Ask through Nginx,
            # which wakes it: a stop while the job still ran would show it queued or running again, not succeeded.
            with _through_nginx(stack) as through_nginx:
                job = through_nginx.get(f"/v1/jobs/{job_id}").json()
            break
        if job["status"] in ("succeeded", "failed", "canceled"):
            break
        if _state(stack) != "ready":  # stopped: allowed only because the job ended just after this poll
            with _through_nginx(stack) as through_nginx:
                job = through_nginx.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "succeeded", f"the proxy stopped the service while job {job_id} ran: {job}"
            break
        past_idle = past_idle or _postponed_stops(stack) > 0
        assert time.monotonic() - started < 240, job
        time.sleep(0.2)
    direct.close()
    assert job["status"] == "succeeded", job
    assert past_idle, "no idle stop was postponed while the job ran; it proves nothing"

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _state(stack) != "stopped":
        time.sleep(0.2)
    assert _state(stack) == "stopped"


def test_a_near_500_mib_upload_through_nginx_is_accepted_once_stored(stack: LocalStack, tmp_path: Path) -> None:
    upload = tmp_path / "huge.wav"
    with open(upload, "wb") as handle:  # zeros, not audio: the job fails at once, nothing decodes 500 MiB
        handle.truncate(499 * 2**20)
    with _through_nginx(stack) as through_nginx:
        accepted = submit(through_nginx, upload)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        stored = Path(stack.service_env["DATA_DIR"]) / "jobs" / job_id / "audio"
        assert stored.stat().st_size == 499 * 2**20
        through_nginx.delete(f"/v1/jobs/{job_id}")
