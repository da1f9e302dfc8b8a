"""Live sessions in the transcript library (whisper_common.transcripts): a session is indexed when it ends, with its
final utterances' times and speakers; it is kept for search as long as REALTIME_RETENTION keeps it, and a transcript
deleted from the library deletes the session with its utterances.

    register_sessions(library, store, settings.realtime_retention)   # in serve_realtime
    await index_session(library, store, session_id)                   # once the session is closed
"""
from __future__ import annotations

import asyncio
import time

from whisper_common.owners import Owner, Role
from whisper_common.transcripts import Source, SourceKind, TranscriptDoc, TranscriptLibrary, build_doc
from whisper_faster.realtime.store import SessionStore, StoredSession

INDEXER = Owner("transcript-index", Role.ADMIN, source="internal")
"""Who reads a session back to index it: the service itself, not a caller."""


def session_doc(stored: StoredSession) -> TranscriptDoc:
    return build_doc(
        id=stored.id, source=SourceKind.REALTIME, owner=stored.owner, created_at=float(stored.created_at),
        ended_at=float(stored.closed_at if stored.closed_at is not None else time.time()), model=stored.model,
        language=None, duration=stored.duration,
        segments=[(u.start, u.end, getattr(u, "speaker", None), u.text) for u in stored.utterances],
    )


async def index_session(library: TranscriptLibrary, store: SessionStore, session_id: str) -> bool:
    """Index an ended session as stored (nothing when an erasure removed it meanwhile, or it holds no text)."""
    stored = await asyncio.to_thread(store.get, session_id, INDEXER)
    if stored is None:
        return False
    return await library.add(session_doc(stored), still_stored=lambda: store.get(session_id, INDEXER) is not None)


def register_sessions(library: TranscriptLibrary, store: SessionStore, retention_seconds: float) -> None:
    async def delete(owner: Owner, session_id: str) -> bool:
        return await asyncio.to_thread(store.delete, session_id, owner)

    library.register(Source(SourceKind.REALTIME, retention_seconds, delete))
