"""Nothing lost: kill -9 a service mid-run, start it again on the same DATA_DIR, and the job completes exactly once
(its lease expires, a worker takes it over) with one webhook delivery id."""
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


def test_kill_9_mid_run_then_restart_completes_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    audio = long_audio(fixture_path("dev00.wav"), tmp_path / "long.wav", repeats=2)  # a minute of meeting
    with webhook_receiver() as receiver:
        with start_jobs_server("jobs-crash-first", data_dir) as first, first.client() as http:
            job_id = submit(http, audio, webhook_url=receiver.url(), metadata={"run": "crash"}).json()["id"]
            wait_for(http, job_id, {"running"}, until=lambda job: job["progress"]["audio_seconds_done"] > 0)
            os.killpg(first.process.pid, signal.SIGKILL)
            first.process.wait()

        with start_jobs_server("jobs-crash-second", data_dir) as second, second.client() as http:
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


def test_a_graceful_stop_gives_the_running_job_back_without_counting_the_attempt(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    audio = long_audio(fixture_path("dev00.wav"), tmp_path / "long.wav", repeats=2)
    log_name = f"jobs-sigterm-first-{uuid.uuid4().hex[:8]}"
    with start_jobs_server(log_name, data_dir) as first, first.client() as http:
        job_id = submit(http, audio).json()["id"]
        wait_for(http, job_id, {"running"}, until=lambda job: job["progress"]["audio_seconds_done"] > 0)
        stop_process(first.process)  # SIGTERM: uvicorn's graceful shutdown
    with start_jobs_server("jobs-sigterm-second", data_dir) as second, second.client() as http:
        done = wait_for(http, job_id, timeout=180)
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1  # the interrupted run was released, not counted as a failure
    released = [json.loads(line) for line in (ARTIFACTS / f"{log_name}.log").read_text().splitlines()
                if '"job released"' in line]
    assert [record["job_id"] for record in released] == [job_id]
