"""The transcript index's queries, on the database layer (`whisper_common.db`): an SQLite file in DATA_DIR
(`transcripts.sqlite3`, FTS5), or PostgreSQL when JOBS_DATABASE_URL is set (`tsvector` + GIN; then one table for
every process and both services, rows carrying their `service`).

    index = open_transcript_index(settings, service="whisper_faster")
    index.add(doc)                                               # replaces a document of the same id
    hits, has_more = index.search(owner, Search(terms=parse_query("budget"), limit=20), cutoffs)
    index.get(owner, "job_...")                                  # None unless `owner` may see it

Every read names its `Owner` (`owners.owner_filter` in the query); `cutoffs` hides what retention is about to remove
(per source, the oldest `ended_at` still kept), so a search never finds a transcript its source no longer keeps.

Ranking: SQLite's `bm25()` (FTS5), PostgreSQL's `ts_rank(tsv, query, 1)`. Ranked pages go on after the previous
page's last id: its score under the same query is computed again and the next page holds what ranks below it (ties
by id), so `after` needs no opaque cursor. (PostgreSQL's `real` rank is read as `double precision`: its exact value,
which a comparison with the next page's ranks needs; the `real` text form is rounded.)
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from whisper_common.db import Database, Params, Tx, open_database
from whisper_common.owners import Owner, owner_filter
from whisper_common.settings import ServiceSettings
from whisper_common.transcripts.highlight import matches_in
from whisper_common.transcripts.model import (
    MARK_END,
    MARK_START,
    Hit,
    IndexedSegment,
    SourceKind,
    TranscriptDoc,
)
from whisper_common.transcripts.query import Term
from whisper_common.transcripts.schema import TEXT_SEARCH_CONFIG, TRANSCRIPTS_SCHEMA

SQLITE_FILE = "transcripts.sqlite3"
MAX_EXAMINED = 1000
"""With a `speaker`, a transcript that matches the query only in other speakers' words is passed over: at most this
many are examined for one page (the page may then hold fewer than `limit`, with `has_more`)."""

_DOC_COLUMNS = "t.doc, t.id, t.source, t.owner, t.created_at, t.ended_at, t.model, t.language, t.duration, " \
               "t.speakers, t.segments, t.text"


@dataclass(frozen=True)
class Search:
    terms: list[Term] | None = None
    """None: the library newest first, without ranking."""
    speaker: str | None = None
    source: SourceKind | None = None
    created_from: float | None = None
    created_to: float | None = None
    limit: int = 20
    after: str | None = None


def owner_tag(owner: str) -> str:
    return "ow" + owner.encode().hex()


def service_tag(service: str) -> str:
    return "sv" + service.encode().hex()


def _encode_segments(doc: TranscriptDoc) -> tuple[str, str]:
    speakers = doc.speakers
    numbers = {name: index for index, name in enumerate(speakers)}
    rows = [[s.start, s.end, numbers.get(s.speaker, -1) if s.speaker else -1, s.offset, s.length]
            for s in doc.segments]
    return json.dumps(speakers, ensure_ascii=False), json.dumps(rows, separators=(",", ":"))


def _doc(row: Mapping[str, Any]) -> TranscriptDoc:
    speakers: list[str] = json.loads(row["speakers"])
    segments = [IndexedSegment(float(start), float(end), speakers[speaker] if speaker >= 0 else None, offset, length)
                for start, end, speaker, offset, length in json.loads(row["segments"])]
    return TranscriptDoc(id=row["id"], source=SourceKind(row["source"]), owner=row["owner"],
                         created_at=float(row["created_at"]), ended_at=float(row["ended_at"]), model=row["model"],
                         language=row["language"], duration=float(row["duration"]), text=row["text"],
                         segments=segments)


class TranscriptIndex:
    def __init__(self, db: Database, service: str) -> None:
        self.db = db
        self.service = service
        self.backend = db.backend

    # --- writing ---

    def add(self, doc: TranscriptDoc) -> None:
        """Index `doc`, in place of a document of the same id (a job indexed again after a restart)."""
        speakers, segments = _encode_segments(doc)
        tags = f"{owner_tag(doc.owner)} {service_tag(self.service)}"
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM transcripts WHERE service = $1 AND id = $2", (self.service, doc.id))
            rows = tx.execute(
                "INSERT INTO transcripts (id, service, source, owner, created_at, ended_at, model, language, duration, "
                "speakers, tags, segments, text) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
                "RETURNING doc",
                (doc.id, self.service, doc.source.value, doc.owner, doc.created_at, doc.ended_at, doc.model,
                 doc.language, doc.duration, speakers, tags, segments, doc.text),
            )
            for speaker in doc.speakers:
                tx.execute("INSERT INTO transcript_speakers (speaker, doc) VALUES ($1, $2)", (speaker, rows[0]["doc"]))

    def remove(self, ids: Sequence[str]) -> int:
        """Remove these documents (their source removed them); returns how many were here."""
        removed = 0
        with self.db.transaction() as tx:
            for doc_id in ids:
                tx.execute("DELETE FROM transcripts WHERE service = $1 AND id = $2", (self.service, doc_id))
                removed += tx.rowcount
        return removed

    def remove_ended_before(self, source: SourceKind, cutoff: float) -> int:
        """Retention: the documents of `source` that ended before `cutoff`."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM transcripts WHERE service = $1 AND source = $2 AND ended_at < $3",
                       (self.service, source.value, cutoff))
            return tx.rowcount

    def erase_owner(self, owner: str) -> int:
        """Every document of `owner`, leaving nothing of them in the database's files where it can: SQLite's FTS5
        keeps a deleted row's words in its index segments until they are merged, so the index is merged
        (`optimize`) before `Database.forget_deleted`."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM transcripts WHERE service = $1 AND owner = $2", (self.service, owner))
            removed = tx.rowcount
            if removed and self.backend == "sqlite":
                tx.execute("INSERT INTO transcript_fts (transcript_fts) VALUES ('optimize')")
        self.db.forget_deleted()
        return removed

    # --- reading ---

    def get(self, owner: Owner, doc_id: str) -> TranscriptDoc | None:
        p = Params()
        with self.db.transaction() as tx:
            rows = tx.execute(
                f"SELECT {_DOC_COLUMNS} FROM transcripts t WHERE t.service = {p(self.service)} AND t.id = {p(doc_id)} "
                f"AND {owner_filter(p, owner, 't.owner')}",
                p.values,
            )
        return _doc(rows[0]) if rows else None

    def doc_number(self, tx: Tx, owner: Owner, doc_id: str) -> int | None:
        p = Params()
        rows = tx.execute(
            f"SELECT t.doc FROM transcripts t WHERE t.service = {p(self.service)} AND t.id = {p(doc_id)} "
            f"AND {owner_filter(p, owner, 't.owner')}",
            p.values,
        )
        return int(rows[0]["doc"]) if rows else None

    def count(self) -> int:
        with self.db.transaction() as tx:
            return int(tx.execute("SELECT COUNT(*) AS n FROM transcripts WHERE service = $1",
                                  (self.service,))[0]["n"])

    def search(self, owner: Owner, search: Search, cutoffs: Mapping[SourceKind, float]) -> tuple[list[Hit], bool]:
        """A page of hits and whether more follow."""
        with self.db.transaction() as tx:
            if search.terms is None:
                return self._newest(tx, owner, search, cutoffs)
            return self._ranked(tx, owner, search, cutoffs)

    def _filters(self, p: Params, owner: Owner, search: Search, cutoffs: Mapping[SourceKind, float]) -> list[str]:
        where = [f"t.service = {p(self.service)}", owner_filter(p, owner, "t.owner")]
        if search.source is not None:
            where.append(f"t.source = {p(search.source.value)}")
        if search.created_from is not None:
            where.append(f"t.created_at >= {p(search.created_from)}")
        if search.created_to is not None:
            where.append(f"t.created_at <= {p(search.created_to)}")
        for source, cutoff in cutoffs.items():
            where.append(f"NOT (t.source = {p(source.value)} AND t.ended_at < {p(cutoff)})")
        if search.speaker is not None:
            where.append(f"EXISTS (SELECT 1 FROM transcript_speakers s WHERE s.doc = t.doc AND s.speaker = "
                         f"{p(search.speaker)})")
        return where

    def _newest(self, tx: Tx, owner: Owner, search: Search, cutoffs: Mapping[SourceKind, float]) -> tuple[list[Hit], bool]:
        p = Params()
        where = self._filters(p, owner, search, cutoffs)
        if search.after is not None:
            anchor_p = Params()
            anchor = tx.execute(
                f"SELECT t.created_at FROM transcripts t WHERE t.service = {anchor_p(self.service)} AND t.id = "
                f"{anchor_p(search.after)} AND {owner_filter(anchor_p, owner, 't.owner')}",
                anchor_p.values,
            )
            if not anchor:
                return [], False
            created_at = p(anchor[0]["created_at"])
            where.append(f"(t.created_at < {created_at} OR (t.created_at = {created_at} AND t.id < {p(search.after)}))")
        rows = tx.execute(
            f"SELECT {_DOC_COLUMNS} FROM transcripts t WHERE {' AND '.join(where)} "
            f"ORDER BY t.created_at DESC, t.id DESC LIMIT {p(search.limit + 1)}",
            p.values,
        )
        return [Hit(_doc(row), None, []) for row in rows[:search.limit]], len(rows) > search.limit

    def _ranked(self, tx: Tx, owner: Owner, search: Search, cutoffs: Mapping[SourceKind, float]) -> tuple[list[Hit], bool]:
        assert search.terms is not None
        ranking = _SqliteRanking(self, owner, search.terms) if self.backend == "sqlite" else \
            _PostgresRanking(search.terms)
        anchor: tuple[float, str] | None = None
        if search.after is not None:
            anchor = ranking.score_of(tx, self, owner, search.after)
            if anchor is None:
                return [], False
        hits: list[Hit] = []
        examined = 0
        batch = search.limit + 1 if search.speaker is None else max(search.limit + 1, 50)
        while True:
            p = Params()
            where = self._filters(p, owner, search, cutoffs)
            candidates = ranking.candidates(tx, p, where, anchor, batch)
            examined += len(candidates)
            marked = ranking.marked(tx, [row["doc"] for row in candidates]) if candidates else {}
            for row in candidates:
                full = marked.get(row["doc"])
                if full is None:
                    continue  # removed meanwhile (PostgreSQL reads each statement's own snapshot)
                doc = _doc(full)
                matches = matches_in(doc, full["marked"], search.speaker)
                if search.speaker is not None and not matches:
                    continue
                hits.append(Hit(doc, ranking.score(row["relevance"]), matches))
            exhausted = len(candidates) < batch
            if len(hits) > search.limit or exhausted:
                return hits[:search.limit], len(hits) > search.limit
            if examined >= MAX_EXAMINED:
                return hits[:search.limit], True
            anchor = (candidates[-1]["relevance"], candidates[-1]["id"])


class _SqliteRanking:
    """FTS5: `bm25()` (lower is better), the owner's and the service's tags in the MATCH so that only the caller's
    transcripts are ranked, `highlight()` for the matched words."""

    def __init__(self, index: TranscriptIndex, owner: Owner, terms: list[Term]) -> None:
        tags = [service_tag(index.service)] + ([] if owner.is_admin else [owner_tag(owner.name)])
        parts = [f'tags : "{tag}"' for tag in tags]
        parts += [f'text : "{term.text}"' + (" *" if term.prefix else "") for term in terms]
        self.match = " AND ".join(parts)  # every term is a quoted string of letters, digits and spaces: no syntax

    def score(self, rank: float) -> float:
        return round(-rank, 6)

    def score_of(self, tx: Tx, index: TranscriptIndex, owner: Owner, doc_id: str) -> tuple[float, str] | None:
        doc = index.doc_number(tx, owner, doc_id)
        if doc is None:
            return None
        rows = tx.execute("SELECT bm25(transcript_fts, 1.0, 0.0) AS relevance FROM transcript_fts WHERE transcript_fts "
                          "MATCH $1 AND rowid = $2", (self.match, doc))
        return (rows[0]["relevance"], doc_id) if rows else None

    def candidates(self, tx: Tx, p: Params, where: list[str], anchor: tuple[float, str] | None,
                   batch: int) -> list[dict[str, Any]]:
        match = p(self.match)
        after = ""
        if anchor is not None:
            rank, last = p(anchor[0]), p(anchor[1])
            after = f"WHERE (relevance > {rank} OR (relevance = {rank} AND id > {last}))"
        # CROSS JOIN: SQLite walks the full-text matches and looks each up, never the other way round.
        return tx.execute(
            f"SELECT doc, id, relevance FROM (SELECT t.doc AS doc, t.id AS id, bm25(transcript_fts, 1.0, 0.0) AS relevance "
            f"FROM transcript_fts CROSS JOIN transcripts t ON t.doc = transcript_fts.rowid WHERE transcript_fts MATCH "
            f"{match} AND {' AND '.join(where)}) {after} ORDER BY relevance, id LIMIT {p(batch)}",
            p.values,
        )

    def marked(self, tx: Tx, docs: list[int]) -> dict[int, dict[str, Any]]:
        """One document at a time: FTS5 seeks a `rowid =` into the match, where `rowid IN (...)` would evaluate the
        whole match first (seconds for a prefix over 100,000 transcripts)."""
        found: dict[int, dict[str, Any]] = {}
        for doc in docs:
            rows = tx.execute(
                f"SELECT {_DOC_COLUMNS}, highlight(transcript_fts, 0, $1, $2) AS marked FROM transcript_fts "
                "CROSS JOIN transcripts t ON t.doc = transcript_fts.rowid WHERE transcript_fts MATCH $3 AND "
                "transcript_fts.rowid = $4",
                (MARK_START, MARK_END, self.match, doc),
            )
            if rows:
                found[doc] = rows[0]
        return found


class _PostgresRanking:
    """`tsv @@ query` through the GIN index, `ts_rank(tsv, query, 1)` (higher is better), `ts_headline(...,
    HighlightAll=true)` for the matched words. Each term is its own parameter: `phraseto_tsquery` for words and
    phrases, `to_tsquery('<word>':*)` for a prefix (the word is letters and digits only)."""

    def __init__(self, terms: list[Term]) -> None:
        self.terms = terms

    def query(self, p: Params) -> str:
        parts = []
        for term in self.terms:
            if term.prefix:
                lexeme = p("'" + term.text + "':*")
                parts.append(f"to_tsquery('{TEXT_SEARCH_CONFIG}', {lexeme})")
            else:
                parts.append(f"phraseto_tsquery('{TEXT_SEARCH_CONFIG}', {p(term.text)})")
        return "(" + " && ".join(parts) + ")"

    def score(self, rank: float) -> float:
        return round(float(rank), 6)

    def score_of(self, tx: Tx, index: TranscriptIndex, owner: Owner, doc_id: str) -> tuple[float, str] | None:
        p = Params()
        query = self.query(p)
        rows = tx.execute(
            f"SELECT ts_rank(t.tsv, {query}, 1)::double precision AS relevance FROM transcripts t WHERE t.service = "
            f"{p(index.service)} AND t.id = {p(doc_id)} AND {owner_filter(p, owner, 't.owner')} AND t.tsv @@ {query}",
            p.values,
        )
        return (rows[0]["relevance"], doc_id) if rows else None

    def candidates(self, tx: Tx, p: Params, where: list[str], anchor: tuple[float, str] | None,
                   batch: int) -> list[dict[str, Any]]:
        query = self.query(p)
        after = ""
        if anchor is not None:
            rank, last = p(anchor[0]), p(anchor[1])
            after = f"WHERE (relevance < {rank} OR (relevance = {rank} AND id > {last}))"
        return tx.execute(
            f"SELECT doc, id, relevance FROM (SELECT t.doc AS doc, t.id AS id, "
            f"ts_rank(t.tsv, {query}, 1)::double precision AS relevance FROM transcripts t WHERE t.tsv @@ {query} AND {' AND '.join(where)}) ranked {after} "
            f"ORDER BY relevance DESC, id LIMIT {p(batch)}",
            p.values,
        )

    def marked(self, tx: Tx, docs: list[int]) -> dict[int, dict[str, Any]]:
        p = Params()
        query = self.query(p)
        options = p(f"StartSel={MARK_START}, StopSel={MARK_END}, HighlightAll=true")
        rows = tx.execute(
            f"SELECT {_DOC_COLUMNS}, ts_headline('{TEXT_SEARCH_CONFIG}', t.text, {query}, {options}) AS marked "
            f"FROM transcripts t WHERE t.doc = ANY({p(docs)})",
            p.values,
        )
        return {row["doc"]: row for row in rows}


def open_transcript_index(settings: ServiceSettings, service: str) -> TranscriptIndex:
    target = settings.jobs_database_url or settings.data_dir / SQLITE_FILE
    return TranscriptIndex(open_database(target, TRANSCRIPTS_SCHEMA, pool_size=4, name="whisper-transcripts"), service)
