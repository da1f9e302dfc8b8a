"""`/v1/transcripts`: the caller's transcript library (an admin's: everyone's), searched or newest first;
`GET`/`DELETE /v1/transcripts/{id}`. A route parses and checks, calls the library (`app.state.transcripts`) with the
caller (`owners.owner_of`) and formats: another owner's transcript is a 404 like one that does not exist."""
from __future__ import annotations

import math
import re
from datetime import date, datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from whisper_common.errors import InvalidParameter, NotFound
from whisper_common.openai_formats import ResponseFormat, parse_response_format, render
from whisper_common.owners import owner_of
from whisper_common.transcripts.highlight import SNIPPET_CHARS
from whisper_common.transcripts.library import TranscriptLibrary
from whisper_common.transcripts.model import Hit, Match, SourceKind, TranscriptDoc
from whisper_common.transcripts.query import MAX_QUERY_CHARS, parse_query
from whisper_common.transcripts.store import Search

TRANSCRIPT_FORMATS = (ResponseFormat.JSON, ResponseFormat.TEXT, ResponseFormat.SRT, ResponseFormat.VTT)
MAX_LIMIT = 100
TRANSCRIPT_ID = Annotated[str, Path(description="The transcript's id: the job's (`job_...`) or the live session's "
                                                "(`sess_...`).", max_length=100)]
_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")


class TranscriptMatchView(BaseModel):
    segment: int = Field(description="The segment's index in the transcript (`segments[i]` of GET /v1/transcripts/{id}).")
    start: float = Field(description="Where the segment begins in the audio, in seconds.")
    end: float
    speaker: str | None = Field(description="Who spoke it (diarization, or a live session's speaker labels); null when "
                                "unknown.")
    snippet: str = Field(description=f"The segment's text, cut to about {SNIPPET_CHARS} characters around the first "
                         "match (with …) when longer. Plain text, not HTML.")
    highlights: list[tuple[int, int]] = Field(description="[start, end) character ranges of the matched words in "
                                              "`snippet`.")


class TranscriptHitView(BaseModel):
    id: str
    object: str = "transcript"
    source: SourceKind = Field(description="`job` (a finished job) or `realtime` (an ended live session).")
    owner: str
    created_at: int = Field(description="When the job was submitted or the session opened (Unix seconds).")
    ended_at: int = Field(description="When the job finished or the session closed (Unix seconds).")
    model: str
    language: str | None
    duration: float = Field(description="Seconds of audio.")
    speakers: list[str]
    score: float | None = Field(description="Relevance (higher is better), comparable within one answer; null without "
                                "`q`.")
    snippet: str = Field(description="The best match's snippet (see `matches`); without `q`, the transcript's first "
                         "words.")
    start: float | None = Field(description="The best matching segment's start in the audio (seconds): jump here. "
                                "Null without `q`.")
    end: float | None
    speaker: str | None = Field(description="The best matching segment's speaker.")
    highlights: list[tuple[int, int]]
    matches: list[TranscriptMatchView] = Field(description="The matching segments, the best first (most matched words, "
                                               "then the earliest), at most 5.")


class TranscriptList(BaseModel):
    object: str = "list"
    data: list[TranscriptHitView]
    first_id: str | None
    last_id: str | None = Field(description="Pass it as `after` for the next page.")
    has_more: bool
    ranked_within: int | None = Field(None, description="With `q`, when more of the caller's transcripts matched than "
                                      "a search ranks (TRANSCRIPT_SEARCH_WINDOW): how many were ranked, the most "
                                      "recently indexed of them; the hits are the best of those. Narrow the search "
                                      "(more words, `from`/`to`, `source`) to rank older ones. Null when every match "
                                      "was ranked.")


class TranscriptSegmentView(BaseModel):
    id: int
    start: float
    end: float
    speaker: str | None
    text: str


class TranscriptView(BaseModel):
    id: str
    object: str = "transcript"
    source: SourceKind
    owner: str
    created_at: int
    ended_at: int
    model: str
    language: str | None
    duration: float
    speakers: list[str]
    text: str
    segments: list[TranscriptSegmentView]


class TranscriptDeleted(BaseModel):
    id: str
    object: str = "transcript.deleted"
    deleted: bool = True


def _library(request: Request) -> TranscriptLibrary:
    library: TranscriptLibrary | None = getattr(request.app.state, "transcripts", None)
    if library is None:
        raise InvalidParameter("transcripts", "the transcript library is not available yet; the service is starting")
    return library


def parse_time(value: str, param: str, *, end_of_day: bool = False) -> float:
    """Unix seconds, a date (`2025-01-31`, UTC; as `to`, the whole day) or an ISO 8601 time (UTC unless it says)."""
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
            return start + 86400 - 0.001 if end_of_day else start
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameter(param, f"'{param}' is Unix seconds, a date (YYYY-MM-DD) or an ISO 8601 time: "
                               f"{value[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = moment.timestamp()
    if not math.isfinite(seconds):
        raise InvalidParameter(param, f"'{param}' is out of range")
    return seconds


def _match_view(match: Match) -> TranscriptMatchView:
    return TranscriptMatchView(segment=match.segment, start=match.start, end=match.end, speaker=match.speaker,
                               snippet=match.snippet, highlights=match.highlights)


def _preview(doc: TranscriptDoc) -> str:
    if len(doc.text) <= SNIPPET_CHARS:
        return doc.text.replace("\n", " ")
    cut = doc.text[:SNIPPET_CHARS].replace("\n", " ")
    return cut[:cut.rfind(" ")] + "…" if " " in cut else cut + "…"


def hit_view(hit: Hit) -> TranscriptHitView:
    doc = hit.doc
    best = hit.matches[0] if hit.matches else None
    return TranscriptHitView(
        id=doc.id, source=doc.source, owner=doc.owner, created_at=int(doc.created_at), ended_at=int(doc.ended_at),
        model=doc.model, language=doc.language, duration=doc.duration, speakers=doc.speakers, score=hit.score,
        snippet=best.snippet if best else _preview(doc), start=best.start if best else None,
        end=best.end if best else None, speaker=best.speaker if best else None,
        highlights=best.highlights if best else [], matches=[_match_view(match) for match in hit.matches],
    )


def transcript_view(doc: TranscriptDoc) -> TranscriptView:
    return TranscriptView(
        id=doc.id, source=doc.source, owner=doc.owner, created_at=int(doc.created_at), ended_at=int(doc.ended_at),
        model=doc.model, language=doc.language, duration=doc.duration, speakers=doc.speakers,
        text=doc.text.replace("\n", " "),
        segments=[TranscriptSegmentView(id=index, start=s.start, end=s.end, speaker=s.speaker,
                                        text=doc.segment_text(s)) for index, s in enumerate(doc.segments)],
    )


def transcripts_router() -> APIRouter:
    router = APIRouter(tags=["transcripts"])

    @router.get(
        "/v1/transcripts",
        response_model=TranscriptList,
        summary="Search the caller's transcripts (finished jobs, ended live sessions), or list them newest first",
        responses={400: {"description": "A parameter the API does not accept (`q`'s syntax, `from` after `to`, ...)"}},
    )
    async def search_transcripts(
        request: Request,
        q: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS, description="Words that must all occur (in any "
                     "order), \"a quoted phrase\", `prefix*` (3 letters at least). Nothing else is syntax. Matched "
                     "with stemming (`countries` finds `country`). Without it: the library, newest first.")] = None,
        speaker: Annotated[str | None, Query(max_length=200, description="Only transcripts where this speaker "
                           "speaks, and only their segments as matches.")] = None,
        source: Annotated[Literal["job", "realtime"] | None, Query(description="`job` or `realtime`.")] = None,
        from_: Annotated[str | None, Query(alias="from", max_length=40, description="Made at or after: Unix "
                         "seconds, a date (YYYY-MM-DD, UTC) or an ISO 8601 time.")] = None,
        to: Annotated[str | None, Query(max_length=40, description="Made at or before (a date: that whole day).")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Hits per page.")] = 20,
        after: Annotated[str | None, Query(max_length=100, description="`last_id` of the previous page (same "
                         "query).")] = None,
    ) -> TranscriptList:
        owner = owner_of(request)
        terms = parse_query(q) if q is not None and q.strip() else None
        created_from = parse_time(from_, "from") if from_ is not None else None
        created_to = parse_time(to, "to", end_of_day=True) if to is not None else None
        if created_from is not None and created_to is not None and created_from > created_to:
            raise InvalidParameter("from", "'from' is after 'to'")
        search = Search(terms=terms, speaker=speaker, source=SourceKind(source) if source else None,
                        created_from=created_from, created_to=created_to, limit=limit, after=after)
        page = await _library(request).search(owner, search)
        data = [hit_view(hit) for hit in page.hits]
        return TranscriptList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                              has_more=page.has_more, ranked_within=page.ranked_within)

    @router.get(
        "/v1/transcripts/{transcript_id}",
        summary="A transcript of the library: json (segments with times and speakers), text, srt or vtt",
        responses={200: {"model": TranscriptView, "content": {"text/plain": {}}}, 404: {"description": "No such transcript"}},
    )
    async def get_transcript(
        request: Request,
        transcript_id: TRANSCRIPT_ID,
        response_format: Annotated[str | None, Query(description="`json` (default), `text`, `srt` or `vtt`.")] = None,
    ) -> Response:
        format_ = parse_response_format(response_format, allowed=TRANSCRIPT_FORMATS)
        doc = await _library(request).get(owner_of(request), transcript_id)
        if doc is None:
            raise NotFound(f"no transcript '{transcript_id[:100]}'", param="transcript_id")
        if format_ is ResponseFormat.JSON:
            return JSONResponse(transcript_view(doc).model_dump(mode="json"))
        return render(doc.transcript(), format_)

    @router.delete(
        "/v1/transcripts/{transcript_id}",
        response_model=TranscriptDeleted,
        summary="Delete a transcript: the job with its audio and result, or the live session, and its index entry",
        responses={404: {"description": "No such transcript"}},
    )
    async def delete_transcript(request: Request, transcript_id: TRANSCRIPT_ID) -> TranscriptDeleted:
        if not await _library(request).delete(owner_of(request), transcript_id):
            raise NotFound(f"no transcript '{transcript_id[:100]}'", param="transcript_id")
        return TranscriptDeleted(id=transcript_id)

    return router
