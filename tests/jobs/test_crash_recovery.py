"""Nothing lost: a service stopped gracefully mid-run gives its job back (the attempt not counted); one killed with
kill -9 mid-run leaves a lease that expires; started again on the same DATA_DIR, the job completes exactly once, with
one webhook delivery id."""
from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import standardwebhooks

from tests.jobs.conftest import WEBHOOK_SECRET, start_jobs_server
from tests.jobs.helpers import long_audio, submit, wait_for
from tests.jobs.receiver import webhook_receiver
from tests.support import ARTIFACTS, fixture_path, stop_process


def _running_with_progress(job: dict) -> bool:
    return job["progress"]["audio_seconds_done"] > 0


def _logged(log_name: str, message: str) -> list[str]:
    lines = (ARTIFACTS / f"{log_name}.log").read_text().splitlines()
    return [json.loads(line)["job_id"] for line in lines if f'"message": "{message}"' in line]


def test_sigterm_then_kill_9_mid_run_then_restart_completes_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    audio = long_audio(fixture_path("dev00.wav"), tmp_path / "long.wav", repeats=2)  # a minute of meeting
    run = uuid.uuid4().hex[:8]
    with webhook_receiver() as receiver:
        with start_jobs_server(f"jobs-crash-1-{run}", data_dir) as first, first.client() as http:
            job_id = submit(http, audio, webhook_url=receiver.url(), metadata={"run": "crash"}).json()["id"]
            wait_for(http, job_id, {"running"}, until=_running_with_progress)
            stop_process(first.process)  # SIGTERM: uvicorn's graceful shutdown gives the job back
        assert _logged(f"jobs-crash-1-{run}", "job released") == [job_id]

        with start_jobs_server(f"jobs-crash-2-{run}", data_dir) as second, second.client() as http:
            resumed = wait_for(http, job_id, {"running"}, until=_running_with_progress)
            assert resumed["attempts"] == 1  # the released run did not count
            os.killpg(second.process.pid, signal.SIGKILL)
            second.process.wait()
        assert _logged(f"jobs-crash-2-{run}", "job finished") == []

        with start_jobs_server(f"jobs-crash-3-{run}", data_dir) as third, third.client() as http:
            done = wait_for(http, job_id, timeout=180, until=lambda job: bool(job["webhook"]["deliveries"])
                            and job["webhook"]["deliveries"][0]["status"] == "delivered")
            result = http.get(f"/v1/jobs/{job_id}/result").json()
            [request] = receiver.wait_for(1)

    assert done["status"] == "succeeded"
    assert done["attempts"] == 2  # the killed run and the one that finished
    assert done["metadata"] == {"run": "crash"}
    assert len(result["text"].split()) > 40
    [delivery] = done["webhook"]["deliveries"]
    assert len(receiver.received()) == 1
    assert request.headers["webhook-id"] == delivery["id"]
    payload = standardwebhooks.Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
    assert payload["data"]["id"] == job_id and payload["data"]["attempts"] == 2
