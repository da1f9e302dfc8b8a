"""What the owners tests share: the keys they run with, and the checks every stored-data route must pass for any
deployment (whole stack on SQLite, a service on PostgreSQL): another owner's reads, lists, cancels and deletes are
404 (never 403: existence is not revealed), the owner's own work, an admin sees everyone's."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from whisper_common.keys.file import add_key
from whisper_common.owners import Quota, Role


@dataclass(frozen=True)
class Keys:
    team_a: str
    team_b: str
    admin: str
    thrifty: str
    """Three seconds of audio a day: its second request is over quota."""
    path: Path


def make_keys(path: Path) -> Keys:
    team_a, _ = add_key(path, "team-a")
    team_b, _ = add_key(path, "team-b", quota=Quota(max_concurrent_requests=1, max_active_jobs=2))
    admin, _ = add_key(path, "boss", Role.ADMIN)
    thrifty, _ = add_key(path, "thrifty", quota=Quota(audio_hours_per_day=3 / 3600))
    return Keys(team_a, team_b, admin, thrifty, path)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_code(response: httpx.Response) -> str | None:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()["error"]["code"]


def wait_finished(client: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}")
        assert job.status_code == 200, job.text
        if job.json()["status"] in ("succeeded", "failed", "canceled"):
            return job.json()
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def listed(client: httpx.Client) -> set[str]:
    ids: set[str] = set()
    after = None
    while True:
        page = client.get("/v1/jobs", params={"limit": 100, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        ids |= {job["id"] for job in body["data"]}
        if not body["has_more"]:
            return ids
        after = body["last_id"]


def check_job_isolation(job_id: str, owner: httpx.Client, other: httpx.Client, admin: httpx.Client) -> None:
    """A finished job: its owner and an admin read it, its result, and find it listed; another owner gets the 404 of
    a job that does not exist everywhere, a DELETE included, and the job is untouched by it."""
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result"):
        assert owner.get(path).status_code == 200, path
        assert admin.get(path).status_code == 200, path
        refused = other.get(path)
        assert refused.status_code == 404 and error_code(refused) == "job_not_found", (path, refused.text)
    assert job_id in listed(owner) and job_id in listed(admin) and job_id not in listed(other)
    assert other.get("/v1/jobs", params={"after": job_id}).json()["data"] == []  # not even as a page anchor
    refused = other.delete(f"/v1/jobs/{job_id}")
    assert refused.status_code == 404 and error_code(refused) == "job_not_found"
    assert owner.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def check_session_isolation(path: str, owner: httpx.Client, other: httpx.Client, admin: httpx.Client) -> None:
    mine = owner.get(path)
    assert mine.status_code == 200 and mine.json()["utterances"], mine.text
    seen = admin.get(path).json()  # (closed_at may be set meanwhile: the session ends after its socket)
    assert [seen[key] for key in ("id", "owner", "utterances")] == [mine.json()[key] for key in ("id", "owner", "utterances")]
    for response_format in (None, "text", "srt"):
        refused = other.get(path, params={"response_format": response_format} if response_format else None)
        assert refused.status_code == 404 and error_code(refused) == "not_found", refused.text


def check_idempotency_is_per_owner(submit: Callable[..., httpx.Response], a: httpx.Client, b: httpx.Client,
                                   audio: Path) -> None:
    key = {"Idempotency-Key": f"same-key-{time.monotonic_ns()}"}
    first = submit(a, audio, headers=key, metadata={"who": "a"})
    assert first.status_code == 202, first.text
    again = submit(a, audio, headers=key, metadata={"who": "a"})
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    theirs = submit(b, audio, headers=key, metadata={"who": "a"})  # the same key and body: another owner's job
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"], theirs.text
    assert "idempotent-replayed" not in theirs.headers and theirs.json()["owner"] != first.json()["owner"]
    other_body = submit(b, audio, headers=key, metadata={"who": "b, changed"})
    assert other_body.status_code == 409 and error_code(other_body) == "idempotency_key_reused"  # its own key
    for client, job in ((a, first), (b, theirs)):
        client.delete(f"/v1/jobs/{job.json()['id']}")
