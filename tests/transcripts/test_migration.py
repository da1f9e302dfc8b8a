"""The transcript index's migration 2 (prefix indexes on SQLite, owner tags in PostgreSQL's tsvector) on an index
that migration 1 made and filled: it upgrades in place, finds what was there as before, and what comes after."""
from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.jobs.postgres import postgres_server
from tests.transcripts.test_index import ADMIN, TEAM_A, TEAM_B, doc, ids
from whisper_common.db import Schema, open_database
from whisper_common.transcripts.schema import PREFIXES, TRANSCRIPTS_SCHEMA
from whisper_common.transcripts.query import parse_query
from whisper_common.transcripts.store import Search, TranscriptIndex

FIRST = Schema(store=TRANSCRIPTS_SCHEMA.store, tables=TRANSCRIPTS_SCHEMA.tables,
               migrations=TRANSCRIPTS_SCHEMA.migrations[:1])


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | Path]:
    if request.param == "sqlite":
        yield tmp_path / "transcripts.sqlite3"
        return
    with postgres_server() as url:  # a database of its own: the other tests' is migrated already
        yield url


def test_an_index_made_by_migration_1_upgrades_and_still_finds_its_transcripts(target: str | Path) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    old = open_database(target, FIRST)
    before = TranscriptIndex(old, service)
    before.add(doc("job_a", segments=[(0.0, 2.0, "Ann", "The quarterly budget was approved.")]))
    before.add(doc("job_b", "team-b", segments=[(0.0, 2.0, None, "Budget approvals, next quarter.")]))
    old.close()

    db = open_database(target, TRANSCRIPTS_SCHEMA)
    try:
        index = TranscriptIndex(db, service)
        with db.transaction() as tx:
            versions = [row["version"] for row in tx.execute(
                "SELECT version FROM whisper_schema_versions WHERE store = 'transcripts' ORDER BY version")]
        assert versions == [1, 2]
        for q in ("budget", "approv*", "quar*", '"quarterly budget"'):
            assert ids(index, TEAM_A, q) == ["job_a"], q
        assert ids(index, TEAM_B, "approv*") == ["job_b"] and sorted(ids(index, ADMIN, "budget")) == ["job_a", "job_b"]
        [hit] = index.search(TEAM_A, Search(terms=parse_query("approv*")), {})[0]
        assert [(m.speaker, [m.snippet[a:b] for a, b in m.highlights]) for m in hit.matches] == [("Ann", ["approved"])]
        index.add(doc("job_c", segments=[(0.0, 2.0, None, "A new budget.")]))
        assert sorted(ids(index, TEAM_A, "budget")) == ["job_a", "job_c"] and ids(index, TEAM_B, "new") == []
        assert index.remove(["job_a"]) == 1 and ids(index, TEAM_A, "quarterly") == []
    finally:
        db.close()
    if isinstance(target, Path):
        with sqlite3.connect(target) as connection:
            [(sql,)] = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'transcript_fts'").fetchall()
            assert "prefix='3 4'" in sql
            connection.execute("INSERT INTO transcript_fts (transcript_fts) VALUES ('integrity-check')")
        connection.close()
    else:
        with psycopg.connect(str(target)) as connection:
            [(lexemes,)] = connection.execute("SELECT tsvector_to_array(tsv) FROM transcripts WHERE id = 'job_b'")
            assert "#ow" + "team-b".encode().hex() in lexemes
            [(prefixes,)] = connection.execute(f"SELECT tsvector_to_array({PREFIXES}) FROM transcripts WHERE id = 'job_b'")
            assert {"bud", "budg", "appr", "#ow" + "team-b".encode().hex()} <= set(prefixes)
