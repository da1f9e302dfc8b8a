"""The transcript library of one service: what finished jobs and ended live sessions feed, what the routes ask, and
what retention and erasure remove. Blocking index calls run in worker threads.

    library = TranscriptLibrary(index)
    library.register(Source(SourceKind.JOB, retention_seconds=settings.job_retention, delete=delete_job))
    await library.job_succeeded(job, transcript, still_stored=lambda: store.peek(job.id) is not None)
    await library.add(doc, still_stored=...)        # a live session's transcript (whisper-faster builds the doc)
    page = await library.search(owner, Search(terms=parse_query("budget")))   # page.hits, page.has_more

A source (jobs, live sessions) is registered by the code that keeps its transcripts: its retention (what the library
hides at once and its janitor removes), and how a transcript is deleted where it is kept (`DELETE
/v1/transcripts/{id}` removes the job with its audio and result, or the session with its utterances, then the index
entry). A document is added after its source stored it; `still_stored` is asked once it is in, so that an erasure or a
deletion that ran meanwhile does not leave it behind.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from whisper_common.erasure import Erasure
from whisper_common.owners import Owner
from whisper_common.transcript import Transcript
from whisper_common.transcripts.model import SourceKind, TranscriptDoc, build_doc
from whisper_common.transcripts.store import Page, Search, TranscriptIndex

if TYPE_CHECKING:
    from whisper_common.jobs.records import JobRow

logger = logging.getLogger("whisper_common.transcripts")


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    retention_seconds: float
    """How long the source keeps a transcript after it ended (JOB_RETENTION, REALTIME_RETENTION)."""
    delete: Callable[[Owner, str], Awaitable[bool]]
    """Remove the transcript where it is kept, if it is `owner`'s to delete; False when it is not there."""


def job_doc(job: JobRow, transcript: Transcript, model: str) -> TranscriptDoc:
    return build_doc(
        id=job.id, source=SourceKind.JOB, owner=job.owner, created_at=job.created_at,
        ended_at=job.finished_at or time.time(), model=model,
        language=transcript.language or None, duration=transcript.duration,
        segments=[(s.start, s.end, s.speaker, s.text) for s in transcript.segments],
    )


ERASER = "transcripts"


class TranscriptLibrary:
    def __init__(self, index: TranscriptIndex, erasure: Erasure | None = None,
                 model_id: Callable[[str | None], str] | None = None) -> None:
        self.index = index
        self.erasure = erasure
        self.model_id = model_id or (lambda requested: requested or "")
        """The model a request's `model` (or none: the default) names, as the service resolves it."""
        self.sources: dict[SourceKind, Source] = {}
        self._place_eraser()

    @property
    def service(self) -> str:
        return self.index.service

    def register(self, source: Source) -> None:
        self.sources[source.kind] = source
        self._place_eraser()

    def _place_eraser(self) -> None:
        """The index's eraser runs after its sources' (erasers run in the order registered): a transcript added while
        an erasure runs is then either removed by it or finds its source gone (`add`'s `still_stored`)."""
        if self.erasure is not None:
            self.erasure.unregister(ERASER)
            self.erasure.register(ERASER, self.erase_owner)

    def unregister(self, kind: SourceKind) -> None:
        self.sources.pop(kind, None)

    def cutoffs(self, now: float | None = None) -> dict[SourceKind, float]:
        """Per source, the oldest end still kept."""
        now = time.time() if now is None else now
        return {kind: now - source.retention_seconds for kind, source in self.sources.items()}

    # --- what the sources feed ---

    async def job_succeeded(self, job: JobRow, transcript: Transcript, still_stored: Callable[[], bool]) -> None:
        requested = job.options_dict.get("model")
        try:
            model = self.model_id(str(requested) if requested else None)
        except Exception:  # noqa: BLE001 - the job ran with it; shown as asked
            model = str(requested or "")
        await self.add(job_doc(job, transcript, model), still_stored)

    async def add(self, doc: TranscriptDoc, still_stored: Callable[[], bool] | None = None) -> bool:
        """Index `doc` (one without any text is left out); False when it was not kept."""
        if not doc.text:
            return False
        await asyncio.to_thread(self.index.add, doc)
        if still_stored is not None and not await asyncio.to_thread(still_stored):
            await self.forget([doc.id])
            return False
        return True

    async def forget(self, ids: list[str]) -> int:
        """Their source removed them."""
        return await asyncio.to_thread(self.index.remove, ids)

    # --- what the routes ask ---

    async def search(self, owner: Owner, search: Search) -> Page:
        return await asyncio.to_thread(self.index.search_page, owner, search, self.cutoffs())

    async def get(self, owner: Owner, doc_id: str) -> TranscriptDoc | None:
        doc = await asyncio.to_thread(self.index.get, owner, doc_id)
        if doc is None or self._expired(doc):
            return None
        return doc

    async def delete(self, owner: Owner, doc_id: str) -> bool:
        """Delete the transcript where it is kept and from the index; False when it is not `owner`'s to see."""
        doc = await self.get(owner, doc_id)
        if doc is None:
            return False
        source = self.sources.get(doc.source)
        if source is not None:
            await source.delete(owner, doc_id)
        await self.forget([doc_id])
        logger.info("transcript deleted", extra={"transcript": doc_id, "source": doc.source.value})
        return True

    async def erase_owner(self, owner: str) -> int:
        return await asyncio.to_thread(self.index.erase_owner, owner)

    # --- retention ---

    def remove_expired(self) -> int:
        """One janitor round (blocking): what each source no longer keeps."""
        removed = 0
        for kind, cutoff in self.cutoffs().items():
            removed += self.index.remove_ended_before(kind, cutoff)
        if removed:
            logger.info("transcripts removed from the index after their retention", extra={"transcripts": removed})
        return removed

    def janitor_seconds(self) -> float:
        shortest = min((source.retention_seconds for source in self.sources.values()), default=3600.0)
        return max(1.0, min(600.0, shortest / 4))

    def _expired(self, doc: TranscriptDoc) -> bool:
        cutoff = self.cutoffs().get(doc.source)
        return cutoff is not None and doc.ended_at < cutoff
