"""Jobs on whisper-faster with the default SQLite store: submit, poll, results in every format, list, cancel,
idempotency, bad input — over real HTTP against a real server and the embedded tiny.en."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.jobs.helpers import long_audio, submit, wait_for, wait_for_activity
from tests.service_servers import JFK_REFERENCE, Server
from tests.support import fixture_path


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_jfk_and_dev00_succeed_with_srt_and_json_results(http: httpx.Client) -> None:
    jfk = submit(http, fixture_path("jfk.flac"), metadata={"meeting": "inauguration", "n": 1})
    dev00 = submit(http, fixture_path("dev00.wav"), response_format="srt")
    assert jfk.status_code == 202, jfk.text
    assert dev00.status_code == 202, dev00.text
    accepted = jfk.json()
    assert accepted["status"] in ("queued", "running")
    assert jfk.headers["location"] == f"/v1/jobs/{accepted['id']}"

    done = wait_for(http, accepted["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1
    assert done["metadata"] == {"meeting": "inauguration", "n": 1}
    assert done["progress"] == {"audio_seconds_done": pytest.approx(11.0, abs=0.1), "audio_seconds": pytest.approx(11.0, abs=0.1)}
    assert done["started_at"] and done["finished_at"] and done["error"] is None

    as_json = http.get(f"/v1/jobs/{accepted['id']}/result", params={"response_format": "json"})
    assert as_json.status_code == 200
    assert _words(as_json.json()["text"])[-8:] == _words(JFK_REFERENCE)[-8:]
    assert as_json.json()["usage"] == {"type": "duration", "seconds": 11}
    srt = http.get(f"/v1/jobs/{accepted['id']}/result", params={"response_format": "srt"})
    assert srt.headers["content-type"].startswith("application/x-subrip")
    assert srt.text.startswith("1\n00:00:00,000 --> ")
    vtt = http.get(f"/v1/jobs/{accepted['id']}/result", params={"response_format": "vtt"}).text
    assert vtt.startswith("WEBVTT")
    verbose = http.get(f"/v1/jobs/{accepted['id']}/result", params={"response_format": "verbose_json"}).json()
    assert verbose["language"] == "english" and verbose["segments"]
    assert http.get(f"/v1/jobs/{accepted['id']}/result", params={"response_format": "text"}).text.endswith("\n")
    refused = http.get(f"/v1/jobs/{accepted['id']}/result", params={"response_format": "diarized_json"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "response_format"

    second = wait_for(http, dev00.json()["id"])
    assert second["status"] == "succeeded", second
    assert second["progress"]["audio_seconds"] == pytest.approx(30.0, abs=0.5)
    default = http.get(f"/v1/jobs/{second['id']}/result")  # the format asked at submit
    assert default.headers["content-type"].startswith("application/x-subrip")
    assert len(_words(default.text)) > 20

    deadline = time.monotonic() + 10  # the job counts are read from the queue every second
    while not re.search(r'^whisper_faster_jobs\{status="succeeded"\} [2-9]', metrics := http.get("/metrics").text, re.M):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.2)
    assert 'whisper_faster_job_attempts_total{outcome="succeeded"}' in metrics
    assert "whisper_faster_job_run_seconds_count" in metrics
    assert "whisper_faster_jobs_oldest_queued_age_seconds" in metrics


def test_list_is_newest_first_and_pages(http: httpx.Client) -> None:
    ids = [submit(http, fixture_path("jfk.flac"), metadata={"i": i}).json()["id"] for i in range(3)]
    page = http.get("/v1/jobs", params={"limit": 2}).json()
    assert [job["id"] for job in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    rest = http.get("/v1/jobs", params={"limit": 1, "after": page["last_id"]}).json()
    assert rest["data"][0]["id"] == ids[0]
    for job_id in ids:
        wait_for(http, job_id)
    succeeded = http.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()["data"]
    assert set(ids) <= {job["id"] for job in succeeded}
    assert http.get("/v1/jobs", params={"status": "nope"}).status_code == 400


def test_cancel_running_job_stops_it_and_the_service_is_busy_meanwhile(
    http: httpx.Client, tmp_path: Path, jobs_data: Path
) -> None:
    audio = long_audio(fixture_path("dev00.wav"), tmp_path / "long.wav", repeats=8)  # 4 minutes
    job_id = submit(http, audio).json()["id"]
    running = wait_for(http, job_id, {"running"}, until=lambda job: job["progress"]["audio_seconds_done"] > 0)
    wait_for_activity(http, lambda body: body["busy"] is True and body["counts"]["jobs_running"] == 1)

    canceled = http.delete(f"/v1/jobs/{job_id}")
    assert canceled.status_code == 202 and canceled.json()["cancel_requested"] is True
    final = wait_for(http, job_id, timeout=60)
    assert final["status"] == "canceled"
    assert final["progress"]["audio_seconds_done"] < running["progress"]["audio_seconds"] / 2
    result = http.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 409 and "canceled" in result.json()["error"]["message"]
    wait_for_activity(http, lambda body: body["busy"] is False)

    deleted = http.delete(f"/v1/jobs/{job_id}")
    assert deleted.json() == {"id": job_id, "object": "transcription.job.deleted", "deleted": True}
    assert not (jobs_data / "jobs" / job_id).exists()
    assert http.get(f"/v1/jobs/{job_id}").status_code == 404


def test_cancel_queued_job_at_once(http: httpx.Client, tmp_path: Path) -> None:
    audio = long_audio(fixture_path("dev00.wav"), tmp_path / "long.wav", repeats=8)
    first = submit(http, audio).json()["id"]
    wait_for(http, first, {"running"})
    queued = submit(http, fixture_path("jfk.flac")).json()["id"]  # one worker: it waits behind the first
    wait_for_activity(http, lambda body: body["counts"]["jobs_queued"] == 1)
    canceled = http.delete(f"/v1/jobs/{queued}")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    http.delete(f"/v1/jobs/{first}")
    assert wait_for(http, first)["status"] == "canceled"


def test_idempotent_resubmission_gives_the_same_job(http: httpx.Client) -> None:
    key = {"Idempotency-Key": "test-idempotent-1"}
    first = submit(http, fixture_path("jfk.flac"), headers=key, metadata={"a": 1})
    again = submit(http, fixture_path("jfk.flac"), headers=key, metadata={"a": 1})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = submit(http, fixture_path("jfk.flac"), headers=key, metadata={"a": 2})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    same = [job for job in http.get("/v1/jobs", params={"limit": 100}).json()["data"] if job["id"] == first.json()["id"]]
    assert len(same) == 1
    wait_for(http, first.json()["id"])


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"metadata": "{not json"}, "metadata"),
        ({"metadata": "[1, 2]"}, "metadata"),
        ({"webhook_url": "ftp://example.com/hook"}, "webhook_url"),
        ({"webhook_url": "http://169.254.169.254/latest"}, "webhook_url"),
        ({"language": "klingon"}, "language"),
        ({"beam_size": "99"}, "beam_size"),
        ({"response_format": "docx"}, "response_format"),
        ({"surprise": "1"}, "surprise"),
    ],
)
def test_bad_fields_are_400_naming_the_field(http: httpx.Client, fields: dict[str, str], param: str) -> None:
    response = http.post("/v1/jobs", files={"file": ("jfk.flac", fixture_path("jfk.flac").read_bytes())}, data=fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_audio_url_to_a_private_address_is_refused(http: httpx.Client) -> None:
    for url in ("http://10.1.2.3/meeting.wav", "http://192.168.0.10/a.flac", "http://[::ffff:10.0.0.1]/a"):
        response = http.post("/v1/jobs", json={"audio_url": url})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "audio_url" and "OUTBOUND_ALLOWLIST" in error["message"]
    missing = http.post("/v1/jobs", json={"metadata": {"a": 1}})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"


def test_unknown_job_is_404_and_a_failed_job_result_is_409_with_its_error(http: httpx.Client) -> None:
    for path in ("/v1/jobs/job_nope", "/v1/jobs/job_nope/result"):
        response = http.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
    assert http.delete("/v1/jobs/job_nope").status_code == 404

    not_audio = http.post("/v1/jobs", files={"file": ("notes.txt", b"these are not sounds " * 50)})
    assert not_audio.status_code == 202
    failed = wait_for(http, not_audio.json()["id"])
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1  # undecodable audio is permanent: no retry
    assert failed["error"]["code"] == "invalid_audio"
    result = http.get(f"/v1/jobs/{failed['id']}/result")
    assert result.status_code == 409
    assert "failed" in result.json()["error"]["message"] and "audio" in result.json()["error"]["message"]


def test_jobs_are_in_the_openapi_document(jobs_server: Server) -> None:
    with jobs_server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    body = paths["/v1/jobs"]["post"]["requestBody"]["content"]
    assert {"file", "webhook_url", "metadata", "beam_size", "task"} <= set(body["multipart/form-data"]["schema"]["properties"])
    assert "audio_url" in body["application/json"]["schema"]["properties"]
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result"} <= set(paths)


def test_deeply_nested_metadata_or_body_is_400_and_the_list_still_works(http: httpx.Client) -> None:
    nested: object = "x"
    for _ in range(600):  # a few KB, under the 16 KiB cap, but too deep to serialise back
        nested = {"a": nested}
    audio = {"file": ("jfk.flac", fixture_path("jfk.flac").read_bytes())}
    as_form = http.post("/v1/jobs", files=audio, data={"metadata": json.dumps(nested)})
    assert as_form.status_code == 400, as_form.text
    assert as_form.json()["error"]["param"] == "metadata"
    as_json = http.post("/v1/jobs", json={"audio_url": "http://10.1.2.3/a.wav", "metadata": nested})
    assert as_json.status_code == 400 and as_json.json()["error"]["param"] == "metadata", as_json.text
    very_deep = http.post("/v1/jobs", content=b"[" * 100_000 + b"]" * 100_000,
                          headers={"content-type": "application/json"})
    assert very_deep.status_code == 400 and very_deep.json()["error"]["param"] == "body", very_deep.text
    deep_string = http.post("/v1/jobs", files=audio, data={"metadata": "[" * 100_000 + "]" * 100_000})
    assert deep_string.status_code == 400 and deep_string.json()["error"]["param"] == "metadata", deep_string.text
    assert http.get("/v1/jobs").status_code == 200
