"""Databases written by the release before schema versions (fixtures made by its own code, tests/db/fixtures/) are
migrated when the current code starts on them: the finished job's result reads back byte for byte, the queued job
runs, the pending webhook delivery is still delivered, the stored session reads back. A newer schema stops a real
service with one line and a non-zero exit, the data untouched. Live sessions in PostgreSQL: stored by one
whisper-faster process, read from another."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.db.release_fixtures import (
    FAILED_JOB, FINISHED_JOB, QUEUE, QUEUED_JOB, RELEASE, SESSION, SESSION_UTTERANCES, WEBHOOK_URL,
)
from tests.jobs.conftest import start_jobs_server
from tests.jobs.helpers import wait_for
from tests.jobs.postgres import postgres_bin
from tests.realtime.audio import recording_pcm16
from tests.realtime.conftest import next_event, open_socket
from tests.realtime.test_server import collect, stream
from tests.support import ARTIFACTS, fixture_path, free_port, python_module
from whisper_common.db import open_database
from whisper_common.jobs.records import JobStatus
from whisper_common.jobs.postgres import PostgresStore
from whisper_common.jobs.sqlite import SqliteStore
from whisper_common.jobs.store import Finish, SqlStore
from whisper_common.owners import ANONYMOUS
from whisper_faster.realtime.store import SESSIONS_SCHEMA, SqlSessionStore

KEEP = {"JOB_RETENTION": "36500d", "REALTIME_RETENTION": "36500d"}  # the fixtures' rows are from 2026-01-01


def raw_result_sqlite(path: Path) -> bytes:
    with sqlite3.connect(path) as connection:
        connection.text_factory = bytes
        [(result,)] = connection.execute("SELECT result FROM jobs WHERE id = ?", (FINISHED_JOB,)).fetchall()
    connection.close()
    return result


def check_release_jobs(store: SqlStore, raw_result: bytes) -> None:
    finished = store.peek(FINISHED_JOB)
    assert finished is not None and finished.status is JobStatus.SUCCEEDED
    assert finished.result is not None and finished.result.encode() == raw_result
    assert json.loads(finished.metadata) == {"customer": "fixture"}
    assert finished.owner == "" and finished.idempotency_key == "fixture-key"  # from before owners: kept as it was
    failed = store.peek(FAILED_JOB)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert json.loads(failed.error or "{}")["code"] == "audio_decode_error"
    [delivery] = store.deliveries(FINISHED_JOB)
    assert delivery.status == "pending" and delivery.event == "job.succeeded"
    pending = store.claim_delivery("new-outbox", time.time(), 30)
    assert pending is not None and pending.url == WEBHOOK_URL and pending.job_id == FINISHED_JOB
    claimed = store.claim("new-worker", time.time(), 30)
    assert claimed is not None and claimed.id == QUEUED_JOB and claimed.audio_file == f"jobs/{QUEUED_JOB}/audio"
    done = store.finish(QUEUED_JOB, "new-worker", Finish(JobStatus.SUCCEEDED, result="{}"), time.time())
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert store.queue_state().counts == {"queued": 0, "running": 0, "succeeded": 2, "failed": 1, "canceled": 0}


def test_the_release_sqlite_files_are_migrated_and_keep_every_row(tmp_path: Path) -> None:
    for name in ("jobs.sqlite3", "realtime.sqlite3"):
        shutil.copy(RELEASE / name, tmp_path / name)
    raw = raw_result_sqlite(tmp_path / "jobs.sqlite3")
    store = SqliteStore(tmp_path / "jobs.sqlite3", QUEUE)
    check_release_jobs(store, raw)
    store.close()
    assert raw_result_sqlite(tmp_path / "jobs.sqlite3") == raw
    sessions = SqlSessionStore(open_database(tmp_path / "realtime.sqlite3", SESSIONS_SCHEMA))
    stored = sessions.get(SESSION, ANONYMOUS)
    assert stored is not None and stored.model == "tiny.en" and stored.closed_at is not None
    assert [(u.item_id, u.start, u.end, u.text) for u in stored.utterances] == list(SESSION_UTTERANCES)
    sessions.shutdown()


def test_the_release_postgres_dump_is_migrated_and_keeps_every_row(new_database) -> None:
    url = new_database()
    bin_dir = postgres_bin()
    assert bin_dir is not None
    subprocess.run([str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f",
                    str(RELEASE / "jobs.postgres.sql")], check=True, capture_output=True)
    with psycopg.connect(url) as connection:
        [(raw,)] = connection.execute("SELECT convert_to(result, 'UTF8') FROM jobs WHERE id = %s",
                                      (FINISHED_JOB,)).fetchall()
    store = PostgresStore(url, QUEUE)
    check_release_jobs(store, bytes(raw))
    store.close()
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT store, version FROM whisper_schema_versions ORDER BY version").fetchall() == [
            ("jobs", 1), ("jobs", 2)]


def release_data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("jobs.sqlite3", "realtime.sqlite3"):
        shutil.copy(RELEASE / name, data / name)
    (data / "jobs" / QUEUED_JOB).mkdir(parents=True)
    shutil.copy(fixture_path("jfk.flac"), data / "jobs" / QUEUED_JOB / "audio")
    return data


def test_a_service_started_on_the_release_data_runs_its_queued_job_and_serves_the_rest(tmp_path: Path) -> None:
    data = release_data_dir(tmp_path)
    raw = raw_result_sqlite(data / "jobs.sqlite3")
    with start_jobs_server("db-release-upgrade", data, **KEEP) as server, server.client() as http:
        queued = wait_for(http, QUEUED_JOB)
        assert queued["status"] == "succeeded", queued
        assert "ask not" in http.get(f"/v1/jobs/{QUEUED_JOB}/result", params={"response_format": "text"}).text
        text = http.get(f"/v1/jobs/{FINISHED_JOB}/result", params={"response_format": "text"})
        assert text.status_code == 200 and "Hello from the release before." in text.text
        # The delivery left pending by the old release is attempted by the new outbox (the receiver is closed).
        finished = wait_for(http, FINISHED_JOB, until=lambda job: job["webhook"]["deliveries"][0]["attempts"])
        assert finished["webhook"]["deliveries"][0]["attempts"][0]["outcome"] == "retrying"
        session = http.get(f"/v1/realtime/sessions/{SESSION}")
        assert session.status_code == 200, session.text
        assert [u["text"] for u in session.json()["utterances"]] == [u[3] for u in SESSION_UTTERANCES]
    assert raw_result_sqlite(data / "jobs.sqlite3") == raw


def test_a_service_refuses_a_newer_schema_in_one_line_and_leaves_the_data(tmp_path: Path) -> None:
    data = release_data_dir(tmp_path)
    SqliteStore(data / "jobs.sqlite3", QUEUE).close()
    with sqlite3.connect(data / "jobs.sqlite3") as connection:
        connection.execute("INSERT INTO whisper_schema_versions (store, version, name, applied_at) "
                           "VALUES ('jobs', 3, 'a newer release', 0)")
    connection.close()
    before = (data / "jobs.sqlite3").read_bytes()
    env = {"DATA_DIR": str(data), "UVICORN_PORT": str(free_port()), "HF_HUB_OFFLINE": "0", **KEEP}
    finished = subprocess.run(python_module("whisper_faster"), env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=120)
    (ARTIFACTS / "db-newer-schema.log").write_text(finished.stderr)
    assert finished.returncode != 0
    records = [json.loads(line) for line in finished.stderr.splitlines() if line.startswith("{")]
    refusals = [r for r in records if r["logger"] == "whisper_common.db" and r["level"] == "error"]
    assert [r["message"] for r in refusals] == [
        f"refusing to start: the jobs schema in {data / 'jobs.sqlite3'} is at version 3, written by a newer release; "
        "this release knows versions up to 2 and cannot run on version 3: run the newer release, or restore a "
        "backup taken before the upgrade"
    ]
    assert not [r for r in records if "Traceback" in r["message"] or r.get("exc_info")], "a traceback after the refusal"
    assert (data / "jobs.sqlite3").read_bytes() == before


@pytest.mark.timeout(600)
def test_a_live_session_stored_by_one_process_is_read_by_another_sharing_postgres(
    tmp_path: Path, new_database
) -> None:
    url = new_database()
    relaxed = {"REALTIME_MAX_LAG_SECONDS": "300", "REALTIME_MAX_LOAD": "10", "REALTIME_MAX_CPU": "10",
               "JOBS_DATABASE_URL": url}
    pcm = recording_pcm16("jfk.flac")
    with start_jobs_server("db-sessions-a", tmp_path / "a", **relaxed) as first, \
            start_jobs_server("db-sessions-b", tmp_path / "b", **relaxed) as second:
        with open_socket(first, key=None) as socket:
            session_id = next_event(socket)["session"]["id"]
            sender = stream(lambda audio: socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio})),
                            pcm, pace=4.0)
            events = collect(lambda: next_event(socket), sender, marker=lambda: socket.send(
                json.dumps({"type": "session.update", "session": {"type": "transcription"}})))
        assert not [event for event in events if event["type"] == "error"], events
        completed = [event["transcript"] for event in events
                     if event["type"] == "conversation.item.input_audio_transcription.completed"]
        assert completed and "country" in " ".join(completed).lower(), events
        assert completed
        with second.client() as http:
            deadline = time.monotonic() + 10
            while True:  # the first process closes the session once it sees the socket end
                stored = http.get(f"/v1/realtime/sessions/{session_id}")
                assert stored.status_code == 200, stored.text
                if stored.json().get("closed_at") or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        assert [u["text"] for u in stored.json()["utterances"]] == completed
        assert not (tmp_path / "a" / "realtime.sqlite3").exists() and not (tmp_path / "b" / "realtime.sqlite3").exists()
