"""Finished realtime sessions, kept so they can be read back (`GET /v1/realtime/sessions/{id}`): each session and its
final utterances with their times. `SessionStore` is the interface; `SqliteSessionStore` keeps them in
DATA_DIR/realtime.sqlite3 (its own small file until the shared jobs store can hold them too)."""
from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class StoredUtterance:
    item_id: str
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class StoredSession:
    id: str
    created_at: int
    closed_at: int | None
    model: str
    utterances: list[StoredUtterance] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return max((utterance.end for utterance in self.utterances), default=0.0)


class SessionStore(Protocol):
    def create(self, session_id: str, model: str) -> None: ...
    def add_utterance(self, session_id: str, utterance: StoredUtterance) -> None: ...
    def close(self, session_id: str, model: str) -> None: ...
    def get(self, session_id: str) -> StoredSession | None: ...
    def remove_ended_before(self, cutoff: float) -> int: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS realtime_sessions (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, closed_at INTEGER, model TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS realtime_utterances (
    session_id TEXT NOT NULL REFERENCES realtime_sessions(id), position INTEGER NOT NULL, item_id TEXT NOT NULL,
    start REAL NOT NULL, "end" REAL NOT NULL, text TEXT NOT NULL, PRIMARY KEY (session_id, position)
);
"""


class SqliteSessionStore:
    """One connection shared by the event loop's worker threads, serialised by a lock (writes are tiny)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def create(self, session_id: str, model: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO realtime_sessions (id, created_at, model) VALUES (?, ?, ?)",
                             (session_id, int(time.time()), model))

    def add_utterance(self, session_id: str, utterance: StoredUtterance) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO realtime_utterances (session_id, position, item_id, start, \"end\", text) VALUES "
                "(?, (SELECT COUNT(*) FROM realtime_utterances WHERE session_id = ?), ?, ?, ?, ?)",
                (session_id, session_id, utterance.item_id, utterance.start, utterance.end, utterance.text),
            )

    def close(self, session_id: str, model: str) -> None:
        """Closed: its time, and the model it ended with (a session.update may have changed it)."""
        with self._lock:
            self._db.execute("UPDATE realtime_sessions SET closed_at = ?, model = ? WHERE id = ?",
                             (int(time.time()), model, session_id))

    def get(self, session_id: str) -> StoredSession | None:
        with self._lock:
            row = self._db.execute("SELECT id, created_at, closed_at, model FROM realtime_sessions WHERE id = ?",
                                   (session_id,)).fetchone()
            if row is None:
                return None
            utterances = [StoredUtterance(*found) for found in self._db.execute(
                "SELECT item_id, start, \"end\", text FROM realtime_utterances WHERE session_id = ? ORDER BY position",
                (session_id,),
            )]
        return StoredSession(row[0], row[1], row[2], row[3], utterances)

    def remove_ended_before(self, cutoff: float) -> int:
        """Remove the sessions (with their utterances) that closed before `cutoff` (or, never closed because the
        process died, began before it); returns how many."""
        ended = "SELECT id FROM realtime_sessions WHERE COALESCE(closed_at, created_at) < ?"
        with self._lock:
            self._db.execute(f"DELETE FROM realtime_utterances WHERE session_id IN ({ended})", (cutoff,))
            return self._db.execute(f"DELETE FROM realtime_sessions WHERE id IN ({ended})", (cutoff,)).rowcount

    def shutdown(self) -> None:
        with self._lock:
            self._db.close()
