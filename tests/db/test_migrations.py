"""Schema versions: migrations applied once, in order, in one transaction; a schema newer than the code refused in
one line (unless the newer versions are additive); another application's SQLite file and a file that is no database
refused and left untouched; an older development layout without `queue` completed; two processes migrating one
PostgreSQL at once."""
from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.db.release_fixtures import RELEASE
from whisper_common.db import (
    CorruptDatabase,
    DatabaseRefused,
    ForeignDatabase,
    Migration,
    MigrationContext,
    Schema,
    SchemaTooNew,
    open_database,
)
from whisper_common.db.postgres import MIGRATION_LOCK
from whisper_common.jobs.records import JobRow, JobStatus
from whisper_common.jobs.sqlite import SqliteStore

ONE = Migration(1, "notes", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",))


def _add_tag(context: MigrationContext) -> None:
    if "tag" not in context.columns("notes"):  # a step in Python: look first, then change
        context.execute("ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT 'none'")


TWO = Migration(2, "notes.tag", (_add_tag, "CREATE INDEX notes_tag ON notes (tag)"), additive=True)


def schema(*migrations: Migration) -> Schema:
    return Schema("notes", frozenset({"notes"}), migrations)


def versions(db_path: Path) -> list[tuple]:
    with sqlite3.connect(db_path) as connection:
        return connection.execute("SELECT store, version, name, additive FROM whisper_schema_versions "
                                  "ORDER BY store, version").fetchall()


def test_migrations_run_once_in_order_and_a_new_one_is_just_appended(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite3"
    db = open_database(path, schema(ONE))
    with db.transaction() as tx:
        tx.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", (1, "before the upgrade"))
    db.close()
    assert versions(path) == [("notes", 1, "notes", 0)]
    db = open_database(path, schema(ONE, TWO))  # the next release appends migration 2
    with db.transaction() as tx:
        assert tx.execute("SELECT id, body, tag FROM notes") == [{"id": 1, "body": "before the upgrade", "tag": "none"}]
    db.close()
    assert versions(path) == [("notes", 1, "notes", 0), ("notes", 2, "notes.tag", 1)]
    open_database(path, schema(ONE, TWO)).close()  # nothing left to do
    assert len(versions(path)) == 2
    with pytest.raises(ValueError, match="numbered"):
        schema(TWO)


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite3"
    open_database(path, schema(ONE)).close()
    broken = Migration(2, "broken", ("CREATE TABLE more (id INTEGER)", "THIS IS NOT SQL"))
    with pytest.raises(sqlite3.OperationalError):
        open_database(path, schema(ONE, broken))
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "more" not in tables and versions(path) == [("notes", 1, "notes", 0)]


def test_a_schema_newer_than_the_code_is_refused_in_one_line_and_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notes.sqlite3"
    open_database(path, schema(ONE)).close()
    with sqlite3.connect(path) as connection:  # what a newer release leaves: a version this one does not know
        connection.execute("INSERT INTO whisper_schema_versions (store, version, name, applied_at) "
                           "VALUES ('notes', 2, 'from the future', 0)")
    before = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="whisper_common.db"), pytest.raises(SchemaTooNew) as refused:
        open_database(path, schema(ONE))
    message = str(refused.value)
    assert "\n" not in message and "version 2" in message and "newer release" in message
    assert [r.getMessage() for r in caplog.records] == [f"refusing to start: {message}"]
    assert path.read_bytes() == before


def test_additive_versions_of_a_newer_release_let_the_older_one_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Expand/contract: release N+1 added a column with a default (additive); N keeps running on the same database."""
    path = tmp_path / "notes.sqlite3"
    open_database(path, schema(ONE, TWO)).close()
    with caplog.at_level(logging.WARNING, logger="whisper_common.db"):
        db = open_database(path, schema(ONE))
    with db.transaction() as tx:
        tx.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", (1, "written by the older release"))
        assert tx.execute("SELECT tag FROM notes") == [{"tag": "none"}]
    db.close()
    assert any("additive" in record.getMessage() for record in caplog.records)


def test_another_applications_sqlite_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        connection.execute("INSERT INTO invoices VALUES (1, 9.5)")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(ForeignDatabase) as refused:
        SqliteStore(path, "whisper_faster")
    assert "\n" not in str(refused.value) and "invoices" in str(refused.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.sqlite3"]  # no -wal, no -journal left


@pytest.mark.parametrize("damage", ["not a database", "header only"])
def test_a_file_that_is_no_database_is_refused_and_untouched(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "jobs.sqlite3"
    if damage == "not a database":
        path.write_bytes(b"this was never an SQLite file\n" * 200)
    else:  # a real database cut after its header page: the schema it points to is gone
        path.write_bytes((RELEASE / "jobs.sqlite3").read_bytes()[:4096])
    before = path.read_bytes()
    with pytest.raises(CorruptDatabase) as refused:
        SqliteStore(path, "whisper_faster")
    message = str(refused.value)
    assert "\n" not in message and "not a usable SQLite database" in message and "left as it is" in message
    assert path.read_bytes() == before


def test_an_older_layout_without_queue_is_completed_and_its_rows_kept(tmp_path: Path) -> None:
    """A development checkout once held a jobs.sqlite3 made before the `queue` column existed."""
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
            "started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION, run_after DOUBLE PRECISION NOT NULL, "
            "attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, lease_owner TEXT, "
            "lease_expires_at DOUBLE PRECISION, cancel_requested INTEGER NOT NULL DEFAULT 0, options TEXT NOT NULL, "
            "metadata TEXT NOT NULL, webhook_url TEXT, audio_url TEXT, audio_file TEXT, idempotency_key TEXT UNIQUE, "
            "error TEXT, result TEXT)"
        )
        connection.execute("INSERT INTO jobs (id, status, created_at, run_after, max_attempts, options, metadata, "
                           "idempotency_key) VALUES ('job_old', 'queued', 1, 1, 3, '{}', '{}', 'k1')")
    connection.close()
    store = SqliteStore(path, "whisperx")
    job = store.peek("job_old")
    assert job is not None and job.queue == "whisperx" and job.request_hash is None and job.audio_seconds_done == 0
    claimed = store.claim("w", time.time(), 30)
    assert claimed is not None and claimed.id == "job_old"
    store.close()


def test_a_table_lacking_a_column_that_needs_a_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, queue TEXT NOT NULL)")
    connection.close()
    with pytest.raises(DatabaseRefused, match="lacks column status"):
        SqliteStore(path, "whisper_faster")
    assert versions_table_absent(path)


def versions_table_absent(path: Path) -> bool:
    with sqlite3.connect(path) as connection:
        return not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'whisper_schema_versions'").fetchall()


# --- PostgreSQL ---------------------------------------------------------------------------------------------------

OPEN_JOBS_STORE = """
import json, sys
from whisper_common.db import migrate
from whisper_common.db.postgres import PostgresDatabase
from whisper_common.jobs.schema import JOBS_SCHEMA
from whisper_common.jobs.store import SqlStore
db = PostgresDatabase(sys.argv[1])
applied = migrate(db, JOBS_SCHEMA, {"queue": "whisper_faster"})   # what open_database runs, with its result shown
store = SqlStore(db, "whisper_faster")
print(json.dumps({"applied": applied, "queued": store.queue_state().counts["queued"]}))
store.close()
"""


def test_two_processes_migrating_one_postgres_at_once_apply_it_once_and_both_start(new_database) -> None:
    url = new_database()
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")  # both processes queue behind it
        processes = [subprocess.Popen([sys.executable, "-c", OPEN_JOBS_STORE, url], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for _ in range(2)]
        deadline = time.monotonic() + 60
        while holder.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0] < 2:
            assert time.monotonic() < deadline, [p.poll() for p in processes]
            time.sleep(0.05)
        holder.execute(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
        results = []
        for process in processes:
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            results.append(json.loads(out))
    assert sorted(result["applied"] for result in results) == [[], [1, 2]]
    assert all(result["queued"] == 0 for result in results)
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT store, version FROM whisper_schema_versions ORDER BY version").fetchall() == [
            ("jobs", 1), ("jobs", 2)]


def test_postgres_refuses_a_newer_schema_in_one_line(new_database) -> None:
    url = new_database()
    open_database(url, schema(ONE)).close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("INSERT INTO whisper_schema_versions (store, version, name, applied_at) "
                           "VALUES ('notes', 7, 'from the future', 0)")
    with pytest.raises(SchemaTooNew, match=r"version 7, written by a newer release") as refused:
        open_database(url, schema(ONE))
    assert "\n" not in str(refused.value) and "password" not in str(refused.value)


def test_an_unreachable_postgres_is_refused_with_the_reason(tmp_path: Path) -> None:
    from tests.support import free_port

    with pytest.raises(DatabaseRefused, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:\d+/jobs: .*refused"):
        open_database(f"postgresql://user:secret@127.0.0.1:{free_port()}/jobs", schema(ONE))


def test_a_job_written_by_this_release_reads_back_unchanged(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "jobs.sqlite3", "whisper_faster")
    job = JobRow(id="job_x", queue="whisper_faster", status=JobStatus.QUEUED, created_at=1.5, run_after=1.5,
                 max_attempts=3, metadata=json.dumps({"text": "? % $1"}))
    store.insert(job)
    assert store.peek("job_x") == job
    store.close()
