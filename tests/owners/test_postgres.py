"""Owners on PostgreSQL (JOBS_DATABASE_URL): the jobs, the live sessions and the usage of a whisper-faster server in
a real PostgreSQL, with the same checks as the whole stack on SQLite (tests/owners/test_stack.py): another owner's
reads, lists and deletes are 404, the owner's own work, an admin sees all; Idempotency-Key per owner; erasure leaves
no row of the owner in any table (usage keeps only its aggregates)."""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.jobs.conftest import start_jobs_server
from tests.jobs.helpers import submit
from tests.jobs.postgres import postgres_server
from tests.owners.helpers import (
    Keys,
    bearer,
    check_idempotency_is_per_owner,
    check_job_isolation,
    check_session_isolation,
    listed,
    make_keys,
    wait_finished,
)
from tests.realtime.audio import recording_pcm16
from tests.realtime.conftest import next_event, open_socket
from tests.service_servers import Server
from tests.support import fixture_path


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("owners-pg") / "api-keys.json")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("owners-pg-data")


@pytest.fixture(scope="module")
def server(database: str, keys: Keys, data: Path) -> Iterator[Server]:
    with start_jobs_server("owners-postgres", data, JOBS_DATABASE_URL=database, API_KEYS_FILE=str(keys.path),
                           USAGE_FLUSH_SECONDS="0.5") as running:
        yield running


def client(server: Server, key: str) -> httpx.Client:
    return server.client(headers=bearer(key))


def live_session(server: Server, key: str) -> str:
    with open_socket(server, key=key) as socket:
        created = next_event(socket)
        socket.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None}}}}))
        assert next_event(socket)["type"] == "session.updated"
        pcm = recording_pcm16("jfk.flac")
        for offset in range(0, len(pcm), 48_000):
            socket.send(json.dumps({"type": "input_audio_buffer.append",
                                    "audio": base64.b64encode(pcm[offset:offset + 48_000]).decode()}))
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while (event := next_event(socket))["type"] != "conversation.item.input_audio_transcription.completed":
            assert event["type"] != "error", event
    return str(created["session"]["id"])


def rows_of(database: str, owner: str) -> dict[str, int]:
    with psycopg.connect(database) as connection:
        return {
            "jobs": connection.execute("SELECT COUNT(*) FROM jobs WHERE owner = %s", (owner,)).fetchone()[0],
            "deliveries": connection.execute(
                "SELECT COUNT(*) FROM webhook_deliveries d LEFT JOIN jobs j ON j.id = d.job_id WHERE j.id IS NULL"
            ).fetchone()[0],
            "sessions": connection.execute(
                "SELECT COUNT(*) FROM realtime_sessions WHERE owner = %s", (owner,)).fetchone()[0],
            "utterances": connection.execute(
                "SELECT COUNT(*) FROM realtime_utterances u LEFT JOIN realtime_sessions s ON s.id = u.session_id "
                "WHERE s.id IS NULL").fetchone()[0],
            "usage": connection.execute("SELECT COUNT(*) FROM usage_daily WHERE owner = %s", (owner,)).fetchone()[0],
        }


def test_jobs_sessions_and_usage_are_their_owners_on_postgres(
    server: Server, keys: Keys, database: str, data: Path
) -> None:
    jfk = fixture_path("jfk.flac")
    with client(server, keys.team_a) as a, client(server, keys.team_b) as b, client(server, keys.admin) as admin:
        job_id = submit(a, jfk, metadata={"marker": "erase-me"}).json()["id"]
        assert wait_finished(admin, job_id)["status"] == "succeeded"
        check_job_isolation(job_id, a, b, admin)
        session = live_session(server, keys.team_a)
        check_session_isolation(f"/v1/realtime/sessions/{session}", a, b, admin)
        check_idempotency_is_per_owner(submit, a, b, fixture_path("hotwords.mp3"))
        usage = a.get("/v1/usage", params={"group_by": "total"}).json()
        assert {row["owner"] for row in usage["data"]} == {"team-a"} and usage["total"]["audio_seconds"] >= 22
        assert rows_of(database, "team-a")["jobs"] >= 1 and rows_of(database, "team-a")["sessions"] == 1
        assert (data / "jobs" / job_id / "audio").is_file()

        erased = a.delete("/v1/owners/me/data").json()
        assert erased["removed"]["jobs"] >= 2 and erased["removed"]["realtime_sessions"] == 1
        assert listed(a) == set() and admin.get(f"/v1/realtime/sessions/{session}").status_code == 404
    assert rows_of(database, "team-a") == {"jobs": 0, "deliveries": 0, "sessions": 0, "utterances": 0,
                                           "usage": rows_of(database, "team-a")["usage"]}
    assert rows_of(database, "team-a")["usage"] > 0  # aggregates only: day, route, model, counts
    with psycopg.connect(database) as connection:
        for table in ("jobs", "webhook_deliveries", "realtime_sessions", "realtime_utterances", "usage_daily"):
            text = connection.execute(f"SELECT COALESCE(string_agg(t::text, ''), '') FROM {table} t").fetchone()[0]
            assert "erase-me" not in text and job_id not in text and session not in text, table
    assert not (data / "jobs" / job_id).exists()


def test_a_refused_handshake_over_quota_is_a_429_with_retry_after(server: Server, keys: Keys) -> None:
    from websockets.exceptions import InvalidStatus

    with client(server, keys.thrifty) as thrifty, fixture_path("jfk.flac").open("rb") as audio:
        assert thrifty.post("/v1/audio/transcriptions", files={"file": audio}).status_code == 200  # 11 s > 3 s
    with pytest.raises(InvalidStatus) as refused:
        open_socket(server, key=keys.thrifty)
    response = refused.value.response
    assert response.status_code == 429 and 0 < int(response.headers["retry-after"]) <= 86400
    assert json.loads(response.body)["error"]["code"] == "insufficient_quota"
