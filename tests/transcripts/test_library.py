"""The transcript library through a real whisper-faster server (embedded tiny.en), on SQLite and on a real
PostgreSQL (JOBS_DATABASE_URL): a phrase of jfk.flac is found in a finished job and in a live session, at the moment
it was said; another owner finds nothing and gets 404s, an admin finds all; deleting (the transcript, the job, the
owner's data) and retention make it unfindable and leave no row; bad input is a 400 with OpenAI's error shape."""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.jobs.conftest import start_jobs_server
from tests.jobs.helpers import submit, wait_for
from tests.jobs.postgres import postgres_server
from tests.owners.helpers import Keys, bearer, make_keys
from tests.service_servers import Server
from tests.support import fixture_path
from tests.transcripts.helpers import assert_error, found, live_session, raw_get, search, wait_found

RETENTION_SECONDS = 45
REALTIME_ENV = {"REALTIME_MAX_LAG_SECONDS": "300", "REALTIME_MAX_LOAD": "10", "REALTIME_MAX_CPU": "10"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("transcripts-keys") / "api-keys.json")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        with postgres_server() as url:
            yield url


@pytest.fixture(scope="module")
def data(backend: str | None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("transcripts-data")


@pytest.fixture(scope="module")
def server(backend: str | None, keys: Keys, data: Path) -> Iterator[Server]:
    env = {"API_KEYS_FILE": str(keys.path), "JOB_RETENTION": str(RETENTION_SECONDS),
           "REALTIME_RETENTION": str(RETENTION_SECONDS), **REALTIME_ENV}
    if backend is not None:
        env["JOBS_DATABASE_URL"] = backend
    with start_jobs_server(f"transcripts-{'postgres' if backend else 'sqlite'}", data, **env) as running:
        yield running


@pytest.fixture(scope="module")
def clients(server: Server, keys: Keys) -> Iterator[tuple[httpx.Client, httpx.Client, httpx.Client]]:
    with server.client(headers=bearer(keys.team_a)) as a, server.client(headers=bearer(keys.team_b)) as b, \
            server.client(headers=bearer(keys.admin)) as admin:
        yield a, b, admin


def finished_job(client: httpx.Client, audio: str = "jfk.flac") -> str:
    accepted = submit(client, fixture_path(audio))
    assert accepted.status_code == 202, accepted.text
    job = wait_for(client, accepted.json()["id"], timeout=300)
    assert job["status"] == "succeeded", job
    return str(job["id"])


def segment_with(segments: list[dict[str, Any]], word: str) -> dict[str, Any]:
    return next(segment for segment in segments if word in segment["text"].lower())


def rows_in_index(backend: str | None, data: Path, owner: str | None = None) -> int:
    where, params = ("WHERE owner = ?", (owner,)) if owner else ("", ())
    if backend is None:
        with sqlite3.connect(data / "transcripts.sqlite3") as connection:
            return int(connection.execute(f"SELECT COUNT(*) FROM transcripts {where}", params).fetchone()[0])
    with psycopg.connect(backend) as connection:
        return int(connection.execute(f"SELECT COUNT(*) FROM transcripts {where.replace('?', '%s')}",
                                      params).fetchone()[0])


def check_isolation(transcript_id: str, owner: httpx.Client, other: httpx.Client, admin: httpx.Client) -> None:
    assert transcript_id in found(admin, q="country") and transcript_id in found(admin)
    assert transcript_id not in found(other, q="country") and transcript_id not in found(other)
    for path in (f"/v1/transcripts/{transcript_id}", f"/v1/transcripts/{transcript_id}?response_format=srt"):
        assert_error(other.get(path), 404, "not_found")
        assert owner.get(path).status_code == 200 and admin.get(path).status_code == 200
    assert search(other, q="country", after=transcript_id)["data"] == []  # not even as a page anchor
    assert search(other, after=transcript_id)["data"] == []
    assert_error(other.delete(f"/v1/transcripts/{transcript_id}"), 404, "not_found")
    assert owner.get(f"/v1/transcripts/{transcript_id}").status_code == 200  # untouched by that


def test_a_jobs_phrase_is_found_at_the_moment_it_was_said(clients: tuple[httpx.Client, ...]) -> None:
    a, b, admin = clients
    job_id = finished_job(a)
    result = a.get(f"/v1/jobs/{job_id}/result", params={"response_format": "verbose_json"}).json()
    hit = wait_found(a, job_id, q='"your country" countries')
    expected = segment_with(result["segments"], "country")
    assert hit["source"] == "job" and hit["owner"] == "team-a" and hit["model"] == "tiny.en" and hit["score"] > 0
    assert (hit["start"], hit["end"], hit["speaker"]) == (pytest.approx(expected["start"], abs=0.001),
                                                         pytest.approx(expected["end"], abs=0.001), None)
    marked = " ".join(hit["snippet"][x:y] for x, y in hit["highlights"]).lower().split()
    assert "country" in marked and set(marked) <= {"your", "country"}, hit
    assert hit["duration"] == pytest.approx(result["duration"], abs=0.01)
    assert {m["start"] for m in hit["matches"]} == {s["start"] for s in result["segments"] if "countr" in s["text"].lower()}

    transcript = a.get(f"/v1/transcripts/{job_id}").json()
    assert [(s["start"], s["end"], s["text"]) for s in transcript["segments"]] == \
        [(s["start"], s["end"], s["text"].strip()) for s in result["segments"]]
    assert "ask not what your country" in a.get(f"/v1/transcripts/{job_id}", params={"response_format": "text"}).text
    assert "-->" in a.get(f"/v1/transcripts/{job_id}", params={"response_format": "vtt"}).text
    assert found(a, q="country", source="realtime") == [] or job_id not in found(a, q="country", source="realtime")
    assert job_id in found(a, q="americ*", source="job", **{"from": "2000-01-01"})
    assert search(a, q="country")["ranked_within"] is None  # fewer matches than TRANSCRIPT_SEARCH_WINDOW
    assert job_id not in found(a, q="country", to="2000-01-01")
    check_isolation(job_id, a, b, admin)


def test_a_live_sessions_phrase_is_found_at_its_utterance(server: Server, keys: Keys,
                                                          clients: tuple[httpx.Client, ...]) -> None:
    a, b, admin = clients
    session_id = live_session(server, keys.team_a)
    hit = wait_found(a, session_id, q="fellow americans", source="realtime")
    stored = a.get(f"/v1/realtime/sessions/{session_id}").json()
    utterance = segment_with(stored["utterances"], "americans")
    assert (hit["source"], hit["start"], hit["end"], hit["speaker"]) == ("realtime", utterance["start"],
                                                                         utterance["end"], utterance.get("speaker"))
    if utterance.get("speaker"):  # live speaker labels: the library knows who said it
        assert hit["speakers"] == [utterance["speaker"]]
        assert session_id in found(a, q="americans", speaker=utterance["speaker"])
        assert session_id not in found(a, q="americans", speaker="nobody-said-it")
    assert "americans" in hit["snippet"].lower() and hit["created_at"] == stored["created_at"]
    check_isolation(session_id, a, b, admin)

    assert a.delete(f"/v1/transcripts/{session_id}").json() == {"id": session_id, "object": "transcript.deleted",
                                                                "deleted": True}
    assert_error(a.get(f"/v1/realtime/sessions/{session_id}"), 404)  # the session itself is gone
    assert session_id not in found(admin, q="americans") and session_id not in found(admin)


def test_deleted_transcripts_and_jobs_are_not_found(clients: tuple[httpx.Client, ...], backend: str | None,
                                                    data: Path) -> None:
    a, _, admin = clients
    by_transcript, by_job = finished_job(a), finished_job(a)
    assert {by_transcript, by_job} <= set(found(a, q="country"))
    deleted = a.delete(f"/v1/transcripts/{by_transcript}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert_error(a.get(f"/v1/jobs/{by_transcript}"), 404, "job_not_found")  # the job went with it
    assert_error(a.get(f"/v1/transcripts/{by_transcript}"), 404, "not_found")
    assert_error(a.delete(f"/v1/transcripts/{by_transcript}"), 404, "not_found")
    assert a.delete(f"/v1/jobs/{by_job}").status_code == 200
    for gone in (by_transcript, by_job):
        assert gone not in found(a, q="country") and gone not in found(admin) and gone not in found(a)
        assert_error(a.get(f"/v1/transcripts/{gone}"), 404)


def test_erasure_removes_the_owners_index_entries(server: Server, keys: Keys, clients: tuple[httpx.Client, ...],
                                                  backend: str | None, data: Path) -> None:
    _, b, admin = clients
    job_id = finished_job(b)
    session_id = live_session(server, keys.team_b)
    wait_found(b, session_id, q="country")
    assert rows_in_index(backend, data, "team-b") == 2
    erased = b.delete("/v1/owners/me/data").json()
    assert erased["removed"]["transcripts"] == 2 and erased["removed"]["jobs"] >= 1
    assert list(erased["removed"])[-1] == "transcripts"  # after its sources: nothing indexed meanwhile is left
    assert rows_in_index(backend, data, "team-b") == 0
    assert found(b) == [] and not {job_id, session_id} & set(found(admin, q="country"))


@pytest.mark.parametrize(("params", "param"), [
    ({"q": '"ask not'}, "q"),
    ({"q": "co*"}, "q"),
    ({"q": "*"}, "q"),
    ({"q": "((("}, "q"),
    ({"q": "country\x00"}, "q"),
    ({"q": "\x07\x1b[2J"}, "q"),
    ({"q": "x" * 1001}, "q"),
    ({"source": "voicemail"}, "source"),
    ({"from": "2025-02-01", "to": "2025-01-31"}, "from"),
    ({"from": "yesterday"}, "from"),
    ({"to": "2025-02-30"}, "to"),
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"after": "x" * 101}, "after"),
])
def test_bad_input_is_a_400_with_the_error_shape(clients: tuple[httpx.Client, ...], params: dict[str, str],
                                                 param: str) -> None:
    a = clients[0]
    error = assert_error(a.get("/v1/transcripts", params=params), 400)
    assert error["param"] == param or param in error["message"], error


def test_fts_syntax_is_searched_as_text_never_a_500(clients: tuple[httpx.Client, ...]) -> None:
    a = clients[0]
    for q in ("NEAR(country ask)", "country NEAR/2 ask", "country OR nothingatall", "country AND NOT ask",
              "tags : country", "{text}: country", "country)", "(country", "country*", "^country", "country:*",
              "'country'", "country's", "country -- ask", "country; DROP TABLE transcripts"):
        response = a.get("/v1/transcripts", params={"q": q})
        assert response.status_code == 200, (q, response.text)
    assert found(a, q="country OR nothingatall") == []  # OR is a word here, which no transcript holds
    status, headers, body = raw_get(str(a.base_url).rstrip("/"), "/v1/transcripts?q=" + "country+" * 131_072,
                                    {"Authorization": a.headers["authorization"]})  # a 1 MiB q
    assert status == 400 and headers["content-type"].startswith("application/json"), (status, headers, body[:200])
    assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
    q_too_long = a.get("/v1/transcripts", params={"q": "country " * 7_000})  # ~56 KB: reaches the app
    assert assert_error(q_too_long, 400)["param"] == "q"
    assert_error(a.get("/v1/transcripts/" + "x" * 101), 400)
    assert_error(a.get("/v1/transcripts/job_x", params={"response_format": "verbose_json"}), 400)


def test_retention_removes_what_its_source_no_longer_keeps(server: Server, keys: Keys,
                                                           clients: tuple[httpx.Client, ...], backend: str | None,
                                                           data: Path) -> None:
    a, _, admin = clients
    job_id = finished_job(a)
    session_id = live_session(server, keys.team_a)
    wait_found(a, session_id, q="country")
    assert job_id in found(a, q="country")
    deadline = time.monotonic() + RETENTION_SECONDS * 3
    while time.monotonic() < deadline and {job_id, session_id} & set(found(admin, q="country")):
        time.sleep(1)
    assert not {job_id, session_id} & set(found(admin, q="country")), "still found after the retention"
    assert_error(a.get(f"/v1/transcripts/{job_id}"), 404)
    while time.monotonic() < deadline and rows_in_index(backend, data) > 0:
        time.sleep(1)
    assert rows_in_index(backend, data) == 0  # the janitor removed the rows, not only hid them
