"""The database layer on both backends (an SQLite file, a real PostgreSQL server): parameters bound by the driver,
rows as dicts, transactions, duplicate keys, durable transactions, and a pool that never hands out a connection the
server killed."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from whisper_common.db import Database, DuplicateKey, Migration, Schema, open_database
from whisper_common.db.postgres import PostgresDatabase

NOTES = Schema("notes", frozenset({"notes"}), (
    Migration(1, "notes", ("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, "
                           "n DOUBLE PRECISION)",)),
))


@pytest.fixture(params=["sqlite", "postgresql"])
def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Database]]:
    opened: list[Database] = []

    def make(**options: object) -> Database:
        if request.param == "sqlite":
            db = open_database(tmp_path / "notes.sqlite3", NOTES)
        else:
            db = open_database(request.getfixturevalue("new_database")(), NOTES, **options)  # type: ignore[arg-type]
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


def test_parameters_are_the_drivers_and_literals_stay_text(make_db) -> None:
    db = make_db()
    tricky = "what? 100% of $1 and %s, 'quoted' \\ ?1"
    with db.transaction() as tx:
        tx.execute("INSERT INTO notes (id, body, n) VALUES ($1, $2, $3)", (1, tricky, 0.5))
        tx.execute("INSERT INTO notes (id, body, n) VALUES ($1, '?', $1)", (2,))
    with db.transaction() as tx:
        rows = tx.execute("SELECT id, body, n, '?' AS q, '%' AS p, '$1' AS d FROM notes WHERE body = $1 OR id = $2 "
                          "ORDER BY id", (tricky, 2))
    assert rows == [{"id": 1, "body": tricky, "n": 0.5, "q": "?", "p": "%", "d": "$1"},
                    {"id": 2, "body": "?", "n": 2.0, "q": "?", "p": "%", "d": "$1"}]


def test_a_transaction_that_raises_leaves_nothing_and_a_duplicate_key_is_named(make_db) -> None:
    db = make_db()
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", (1, "gone"))
        raise RuntimeError("rolled back")
    with db.transaction() as tx:
        assert tx.execute("SELECT COUNT(*) AS n FROM notes") == [{"n": 0}]
        tx.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", (1, "kept"))
    with pytest.raises(DuplicateKey), db.transaction() as tx:
        tx.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", (1, "twice"))
    with db.transaction() as tx:
        assert tx.execute("SELECT body FROM notes") == [{"body": "kept"}]
        tx.execute("UPDATE notes SET n = $1", (1.0,))
        assert tx.rowcount == 1


def test_sqlite_syncs_a_durable_transaction_in_full_and_runs_wal(tmp_path: Path) -> None:
    db = open_database(tmp_path / "notes.sqlite3", NOTES)
    with db.transaction() as tx:
        assert tx.execute("PRAGMA journal_mode") == [{"journal_mode": "wal"}]
        assert tx.execute("PRAGMA synchronous") == [{"synchronous": 1}]  # NORMAL
    with db.transaction(durable=True) as tx:
        assert tx.execute("PRAGMA synchronous") == [{"synchronous": 2}]  # FULL: the WAL is synced at COMMIT
        tx.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", (1, "accepted"))
    with db.transaction() as tx:
        assert tx.execute("PRAGMA synchronous") == [{"synchronous": 1}]
    db.close()


def test_postgres_commits_a_durable_transaction_synchronously_even_where_the_server_does_not(new_database) -> None:
    url = new_database()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET synchronous_commit = off")
    db = open_database(url, NOTES)
    with db.transaction() as tx:
        assert tx.execute("SHOW synchronous_commit") == [{"synchronous_commit": "off"}]
    with db.transaction(durable=True) as tx:
        assert tx.execute("SHOW synchronous_commit") == [{"synchronous_commit": "on"}]
    with db.transaction() as tx:  # SET LOCAL ended with its transaction
        assert tx.execute("SHOW synchronous_commit") == [{"synchronous_commit": "off"}]
    db.close()


def test_the_pool_never_hands_out_a_connection_the_server_killed(new_database, postgres_url: str) -> None:
    db = open_database(new_database(), NOTES, pool_size=1)
    assert isinstance(db, PostgresDatabase)
    with db.transaction() as tx:
        [first] = tx.execute("SELECT pg_backend_pid() AS pid")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (first["pid"],)).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (first["pid"],)).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    for _ in range(3):  # the one pooled connection was dead: replaced, not handed out
        with db.transaction() as tx:
            [again] = tx.execute("SELECT pg_backend_pid() AS pid")
        assert again["pid"] != first["pid"]
    assert db.pool.get_stats().get("connections_lost", 0) >= 1
    db.close()
