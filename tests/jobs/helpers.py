"""Submitting and polling jobs over real HTTP."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

FINISHED = {"succeeded", "failed", "canceled"}


def submit(
    client: httpx.Client, audio: Path, *, headers: dict[str, str] | None = None, **fields: Any
) -> httpx.Response:
    data = {key: json.dumps(value) if isinstance(value, dict) else value for key, value in fields.items()}
    with open(audio, "rb") as handle:
        return client.post("/v1/jobs", files={"file": (audio.name, handle)}, data=data, headers=headers or {})


def wait_for(
    client: httpx.Client, job_id: str, statuses: set[str] = FINISHED, timeout: float = 120, **until: Any
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until its status is in `statuses` (and `until(job)` holds, when given)."""
    check = until.get("until")
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in statuses and (check is None or check(job)):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {statuses} within {timeout}s: {job}")


def long_audio(source: Path, destination: Path, repeats: int) -> Path:
    """`source` played `repeats` times in a row (FFmpeg), for a run long enough to cancel or kill mid-way."""
    import subprocess

    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(repeats - 1), "-i", str(source), "-ac", "1", "-ar",
         "16000", str(destination)],
        check=True,
    )
    return destination


def wait_for_activity(client: httpx.Client, check: Any, timeout: float = 10) -> dict[str, Any]:
    """Poll GET /health/activity until `check(body)` holds (its counts are refreshed every second)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get("/health/activity").json()
        if check(body):
            return body
        time.sleep(0.1)
    raise AssertionError(f"activity never matched: {body}")
