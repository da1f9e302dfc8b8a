"""Finished realtime sessions, kept so they can be read back (`GET /v1/realtime/sessions/{id}`): each session and its
final utterances with their times. `SessionStore` is the interface; `SqlSessionStore` holds the queries, on the
database layer: in PostgreSQL when JOBS_DATABASE_URL is set (so every whisper-faster process sharing it reads every
session, and the service can run more than one API pod), else in `DATA_DIR/realtime.sqlite3`.

    store = open_session_store(settings)    # migrated (store "realtime" in whisper_schema_versions), ready
    store.create(session_id, model, owner="team-a")
    stored = store.get(session_id, owner)    # None unless `owner` may see it (its own; an admin: any)

Each session belongs to the owner that opened it (migration 2; `''` for sessions from before owners, which only an
admin sees); reads filter by the caller in the query (`owners.owner_filter`), so another owner's session is answered
like one that does not exist. `erase_owner` removes an owner's sessions with their utterances, `delete` one session.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from whisper_common.db import Database, Migration, Params, Schema, open_database
from whisper_common.owners import Owner, owner_filter
from whisper_common.settings import ServiceSettings

SQLITE_FILE = "realtime.sqlite3"


@dataclass(frozen=True)
class StoredUtterance:
    item_id: str
    start: float
    end: float
    text: str
    speaker: str | None = None
    """Who spoke (a voiceprint's name or a session-local letter; migration 3), None when labels were off."""


@dataclass(frozen=True)
class StoredSession:
    id: str
    created_at: int
    closed_at: int | None
    model: str
    utterances: list[StoredUtterance] = field(default_factory=list)
    owner: str = ""

    @property
    def duration(self) -> float:
        return max((utterance.end for utterance in self.utterances), default=0.0)


class SessionStore(Protocol):
    def create(self, session_id: str, model: str, owner: str = "") -> None: ...
    def add_utterance(self, session_id: str, utterance: StoredUtterance) -> None: ...
    def close(self, session_id: str, model: str) -> None: ...
    def get(self, session_id: str, owner: Owner) -> StoredSession | None: ...
    def remove_ended_before(self, cutoff: float) -> int: ...
    def delete(self, session_id: str, owner: Owner) -> bool: ...
    def erase_owner(self, owner: str) -> int: ...
    def shutdown(self) -> None: ...


SESSIONS_SCHEMA = Schema(
    store="realtime",
    tables=frozenset({"realtime_sessions", "realtime_utterances"}),
    migrations=(
        # The release before schema versions made these in SQLite with INTEGER/REAL columns (the same affinities);
        # BIGINT and DOUBLE PRECISION keep the seconds and times whole in PostgreSQL.
        Migration(1, "sessions and their utterances", (
            "CREATE TABLE IF NOT EXISTS realtime_sessions (id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, "
            "closed_at BIGINT, model TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS realtime_utterances (session_id TEXT NOT NULL REFERENCES realtime_sessions(id), "
            "position INTEGER NOT NULL, item_id TEXT NOT NULL, start DOUBLE PRECISION NOT NULL, "
            "\"end\" DOUBLE PRECISION NOT NULL, text TEXT NOT NULL, PRIMARY KEY (session_id, position))",
        )),
        Migration(2, "sessions.owner", (
            "ALTER TABLE realtime_sessions ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX IF NOT EXISTS realtime_sessions_owner ON realtime_sessions (owner, created_at)",
        ), additive=True),
        Migration(3, "utterances.speaker", (
            "ALTER TABLE realtime_utterances ADD COLUMN speaker TEXT",
        ), additive=True),
    ),
)


class SqlSessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, session_id: str, model: str, owner: str = "") -> None:
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO realtime_sessions (id, created_at, model, owner) VALUES ($1, $2, $3, $4)",
                       (session_id, int(time.time()), model, owner))

    def add_utterance(self, session_id: str, utterance: StoredUtterance) -> None:
        """Kept only while the session is (an owner's erasure during the session removes it: later utterances go)."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO realtime_utterances (session_id, position, item_id, start, \"end\", text, speaker) SELECT "
                "$1, (SELECT COUNT(*) FROM realtime_utterances WHERE session_id = $1), $2, $3, $4, $5, $6 "
                "WHERE EXISTS (SELECT 1 FROM realtime_sessions WHERE id = $1)",
                (session_id, utterance.item_id, utterance.start, utterance.end, utterance.text, utterance.speaker),
            )

    def close(self, session_id: str, model: str) -> None:
        """Closed: its time, and the model it ended with (a session.update may have changed it)."""
        with self.db.transaction() as tx:
            tx.execute("UPDATE realtime_sessions SET closed_at = $1, model = $2 WHERE id = $3",
                       (int(time.time()), model, session_id))

    def get(self, session_id: str, owner: Owner) -> StoredSession | None:
        """The session, if it is `owner`'s to see."""
        p = Params()
        with self.db.transaction() as tx:
            rows = tx.execute(
                f"SELECT id, created_at, closed_at, model, owner FROM realtime_sessions WHERE id = {p(session_id)} "
                f"AND {owner_filter(p, owner)}",
                p.values,
            )
            if not rows:
                return None
            utterances = tx.execute(
                "SELECT item_id, start, \"end\", text, speaker FROM realtime_utterances WHERE session_id = $1 "
                "ORDER BY position",
                (session_id,),
            )
        row = rows[0]
        return StoredSession(row["id"], row["created_at"], row["closed_at"], row["model"],
                             [StoredUtterance(u["item_id"], u["start"], u["end"], u["text"], u["speaker"])
                              for u in utterances],
                             row["owner"])

    def remove_ended_before(self, cutoff: float) -> int:
        """Remove the sessions (with their utterances) that closed before `cutoff` (or, never closed because the
        process died, began before it); returns how many."""
        ended = "SELECT id FROM realtime_sessions WHERE COALESCE(closed_at, created_at) < $1"
        with self.db.transaction() as tx:
            tx.execute(f"DELETE FROM realtime_utterances WHERE session_id IN ({ended})", (cutoff,))
            tx.execute(f"DELETE FROM realtime_sessions WHERE id IN ({ended})", (cutoff,))
            return tx.rowcount

    def delete(self, session_id: str, owner: Owner) -> bool:
        """Remove one session with its utterances, if it is `owner`'s to see (`DELETE /v1/transcripts/{id}`)."""
        p = Params()
        mine = f"SELECT id FROM realtime_sessions WHERE id = {p(session_id)} AND {owner_filter(p, owner)}"
        with self.db.transaction() as tx:
            tx.execute(f"DELETE FROM realtime_utterances WHERE session_id IN ({mine})", p.values)
            tx.execute(f"DELETE FROM realtime_sessions WHERE id IN ({mine})", p.values)
            return tx.rowcount == 1

    def erase_owner(self, owner: str) -> int:
        """Remove every session of `owner` with its utterances; returns how many sessions."""
        mine = "SELECT id FROM realtime_sessions WHERE owner = $1"
        with self.db.transaction() as tx:
            tx.execute(f"DELETE FROM realtime_utterances WHERE session_id IN ({mine})", (owner,))
            tx.execute("DELETE FROM realtime_sessions WHERE owner = $1", (owner,))
            removed = tx.rowcount
        self.db.forget_deleted()
        return removed

    def shutdown(self) -> None:
        self.db.close()


def open_session_store(settings: ServiceSettings) -> SqlSessionStore:
    target = settings.jobs_database_url or settings.data_dir / SQLITE_FILE
    return SqlSessionStore(open_database(target, SESSIONS_SCHEMA, pool_size=4, name="whisper-realtime"))
