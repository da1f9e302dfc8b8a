"""The pods' preStop hook (deploy/kubernetes/base/drain.py), run as Kubernetes runs it (`python drain.py`), against
a real whisper-faster app served by uvicorn on a free port with API keys set: it waits while inferences, realtime
sessions or running jobs are under way, not for queued jobs, and gives up at its deadline. The work under way is
set on the app's real activity registry and inference gauge (no model is loaded: the hook only reads them)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.deploy.wiring import KUSTOMIZE_ROOT
from tests.support import free_port, wait_for_http

DRAIN = KUSTOMIZE_ROOT / "base" / "drain.py"
API_KEYS = "first-key,second-key"


@dataclass
class Service:
    app: FastAPI
    port: int
    work: dict[str, int]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from whisper_faster.app import create_app
    from whisper_faster.settings import Settings

    settings = Settings(
        preload_models="", data_dir=tmp_path_factory.mktemp("data"), jobs_workers=0, api_keys=API_KEYS
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health/ready", timeout=60)
        work = {"sessions_under_test": 0, "jobs_queued": 0, "webhooks_pending": 0}
        # The same registry the realtime route and the jobs runtime register their counters on.
        app.state.activity.register("sessions_under_test", lambda: work["sessions_under_test"])
        app.state.activity.register("jobs_queued", lambda: work["jobs_queued"])
        app.state.activity.register("webhooks_pending", lambda: work["webhooks_pending"])
        yield Service(app, port, work)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(autouse=True)
def idle(service: Service) -> Iterator[None]:
    yield
    service.work.update(sessions_under_test=0, jobs_queued=0, webhooks_pending=0)
    service.app.state.metrics.inference_active.set(0)


def start_drain(port: int, deadline: float = 120, api_keys: str = API_KEYS) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(DRAIN), "--port", str(port), "--deadline", str(deadline), "--settle", "0",
         "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"API_KEYS": api_keys, "PATH": "/usr/bin:/bin"},
    )


def finish(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()]


def still_waiting(process: subprocess.Popen[str], seconds: float = 1.5) -> bool:
    time.sleep(seconds)  # several polls (every 0.2 s)
    return process.poll() is None


def test_waits_for_a_session_then_lets_the_pod_stop(service: Service) -> None:
    service.work["sessions_under_test"] = 1
    process = start_drain(service.port)
    assert still_waiting(process)
    service.work["sessions_under_test"] = 0
    assert finish(process)[-1]["drain"] == "idle"


def test_waits_for_an_inference_reading_metrics_with_the_first_key(service: Service) -> None:
    assert httpx.get(f"http://127.0.0.1:{service.port}/metrics").status_code == 401  # the key is needed
    service.app.state.metrics.inference_active.set(1)
    process = start_drain(service.port)
    assert still_waiting(process)
    service.app.state.metrics.inference_active.set(0)
    lines = finish(process)
    assert lines[-1]["drain"] == "idle"
    assert not any(line["drain"] == "metrics unreadable" for line in lines)


@pytest.mark.parametrize("left_for_others", ["jobs_queued", "webhooks_pending"])
def test_queued_jobs_and_pending_webhooks_do_not_hold_the_pod(service: Service, left_for_others: str) -> None:
    service.work[left_for_others] = 3
    assert httpx.get(f"http://127.0.0.1:{service.port}/health/activity").json()["busy"] is True
    assert finish(start_drain(service.port))[-1]["drain"] == "idle"


def test_gives_up_at_the_deadline(service: Service) -> None:
    service.work["sessions_under_test"] = 2
    last = finish(start_drain(service.port, deadline=1))[-1]
    assert last["drain"] == "deadline"
    assert last["busy"] == {"sessions_under_test": 2}


def test_a_refused_key_still_waits_for_the_activities(service: Service) -> None:
    service.work["sessions_under_test"] = 1
    process = start_drain(service.port, api_keys="wrong-key")
    assert still_waiting(process)
    service.work["sessions_under_test"] = 0
    lines = finish(process)
    assert {"drain": "metrics unreadable", "status": 401} in lines
    assert lines[-1]["drain"] == "idle"


def test_a_service_that_is_gone_is_not_waited_for() -> None:
    assert finish(start_drain(free_port()))[-1] == {"drain": "service not answering", "error": "URLError"}


def test_the_hook_is_what_the_pods_run() -> None:
    for manifest in ("base/whisper-faster.yaml", "base/whisperx.yaml", "overlays/gpu/workers.yaml"):
        assert '"/etc/whisper-drain/drain.py"' in (KUSTOMIZE_ROOT / manifest).read_text(), manifest
    assert Path(DRAIN).name == "drain.py"
