"""Transcript search: the library of a service's finished transcripts (its jobs', and whisper-faster's live
sessions'), searchable in full text by their owner, with the moment each match was spoken and by whom.

A service opens it for its lifespan and hands it to what finishes transcripts (the core knows no service):

    async with serve_transcripts(app, settings, service="whisper_faster") as transcripts:   # app.state.transcripts
        async with serve_jobs(app, settings, engine, metrics_namespace="whisper_faster", transcripts=transcripts):
            yield
    routers=[..., transcripts_router()]                   # GET /v1/transcripts, GET/DELETE /v1/transcripts/{id}

`query` parses `q` (words, "phrases", prefix*; nothing else is syntax), `model` is a document and a hit, `schema` and
`store` the index on the database layer (SQLite FTS5, PostgreSQL tsvector + GIN), `highlight` turns the databases'
highlighted text into segments (time, speaker, snippet), `library` is what sources feed and routes ask (retention,
deletion where a transcript is kept, erasure), `routes` the HTTP surface. The jobs register themselves as a source
(`jobs.runtime`), whisper-faster its live sessions.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from functools import partial

from fastapi import FastAPI

from whisper_common.model_catalog import resolve_model_id
from whisper_common.settings import ServiceSettings
from whisper_common.transcripts.library import ERASER, Source, TranscriptLibrary
from whisper_common.transcripts.model import SourceKind, TranscriptDoc, build_doc
from whisper_common.transcripts.routes import transcripts_router
from whisper_common.transcripts.store import Search, TranscriptIndex, open_transcript_index

logger = logging.getLogger("whisper_common.transcripts")

__all__ = ["Search", "Source", "SourceKind", "TranscriptDoc", "TranscriptIndex", "TranscriptLibrary", "build_doc",
           "serve_transcripts", "transcripts_router"]


@contextlib.asynccontextmanager
async def serve_transcripts(app: FastAPI, settings: ServiceSettings, *, service: str) -> AsyncIterator[TranscriptLibrary]:
    """Open the index (`app.state.transcripts`), register its eraser, and run its retention janitor."""
    index = await asyncio.to_thread(open_transcript_index, settings, service)
    library = TranscriptLibrary(index, app.state.erasure, partial(resolve_model_id, settings=settings))
    app.state.transcripts = library
    janitor = asyncio.create_task(_janitor(library), name="transcripts-janitor")
    try:
        yield library
    finally:
        janitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await janitor
        app.state.erasure.unregister(ERASER)
        app.state.transcripts = None
        index.db.close()


async def _janitor(library: TranscriptLibrary) -> None:
    """Remove what each source no longer keeps, every quarter of the shortest retention (1 s to 10 minutes; the
    sources register after the janitor starts, so the interval is asked again every second)."""
    last = -math.inf
    while True:
        if time.monotonic() - last >= library.janitor_seconds():
            last = time.monotonic()
            try:
                await asyncio.to_thread(library.remove_expired)
            except Exception as exc:  # noqa: BLE001 - the database may be away for a while; next round
                logger.warning("removing expired transcripts failed", extra={"error": repr(exc)})
        await asyncio.sleep(1.0)
