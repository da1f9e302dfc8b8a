"""The transcript index's queries, on the database layer (`whisper_common.db`): an SQLite file in DATA_DIR
(`transcripts.sqlite3`, FTS5), or PostgreSQL when JOBS_DATABASE_URL is set (`tsvector` + GIN; then one table for
every process and both services, rows carrying their `service`).

    index = open_transcript_index(settings, service="whisper_faster")
    index.add(doc)                                               # replaces a document of the same id
    hits, has_more = index.search(owner, Search(terms=parse_query("budget"), limit=20), cutoffs)
    page = index.search_page(owner, search, cutoffs)             # the same, with `ranked_within`
    index.get(owner, "job_...")                                  # None unless `owner` may see it

Every read names its `Owner` (`owners.owner_filter` in the query); `cutoffs` hides what retention is about to remove
(per source, the oldest `ended_at` still kept), so a search never finds a transcript its source no longer keeps.

Ranking: SQLite's `bm25()` (FTS5), PostgreSQL's `ts_rank(tsv, query, 1)`, over a window: the `search_window`
(TRANSCRIPT_SEARCH_WINDOW) most recently indexed transcripts that match, filters applied. Scoring costs a little for
each transcript scored (a frequent word matches all of an owner's transcripts), so a search with more matches than
the window ranks the newest of them and says so (`Page.ranked_within`). Ranked pages go on after the previous page's
last id: its place in the window (or, when it has left the window, its score under the same query) and the next page
holds what ranks below it (ties by id), so `after` needs no opaque cursor. (PostgreSQL's `real` rank is read as `double precision`: its exact value,
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
from whisper_common.transcripts.highlight import QueryLexemes, marked_ranges, matches_in, query_words, words_beginning
from whisper_common.transcripts.model import (
    MARK_END,
    MARK_START,
    Hit,
    IndexedSegment,
    SourceKind,
    TranscriptDoc,
)
from whisper_common.transcripts.query import Term
from whisper_common.transcripts.schema import PREFIX_LENGTHS, PREFIXES, TAG_MARK, TEXT_SEARCH_CONFIG, TRANSCRIPTS_SCHEMA

SQLITE_FILE = "transcripts.sqlite3"
MAX_EXAMINED = 1000
"""With a `speaker`, a transcript that matches the query only in other speakers' words is passed over: at most this
many are examined for one page (the page may then hold fewer than `limit`, with `has_more`)."""
_SPEAKER_BATCH = 50
SEARCH_WINDOW = 500
"""TRANSCRIPT_SEARCH_WINDOW's default (settings)."""

_DOC_COLUMNS = "t.doc, t.id, t.source, t.owner, t.created_at, t.ended_at, t.model, t.language, t.duration, " \
               "t.speakers, t.segments, t.text"


@dataclass(frozen=True)
class Page:
    hits: list[Hit]
    has_more: bool
    ranked_within: int | None = None
    """Set when more transcripts matched than a search ranks: the hits are the best of this many, the most recently
    indexed matches."""


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


def repr_lexeme(lexeme: str) -> str:
    """A tsquery of one lexeme as written (a tag: `#`, letters and hex digits; nothing to escape)."""
    return "'" + lexeme + "'"


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
    def __init__(self, db: Database, service: str, *, search_window: int = SEARCH_WINDOW) -> None:
        self.db = db
        self.service = service
        self.backend = db.backend
        self.search_window = search_window
        """A search with `q` ranks at most this many matching transcripts: the most recently indexed."""

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
        page = self.search_page(owner, search, cutoffs)
        return page.hits, page.has_more

    def search_page(self, owner: Owner, search: Search, cutoffs: Mapping[SourceKind, float]) -> Page:
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

    def _newest(self, tx: Tx, owner: Owner, search: Search, cutoffs: Mapping[SourceKind, float]) -> Page:
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
                return Page([], False)
            created_at = p(anchor[0]["created_at"])
            where.append(f"(t.created_at < {created_at} OR (t.created_at = {created_at} AND t.id < {p(search.after)}))")
        rows = tx.execute(
            f"SELECT {_DOC_COLUMNS} FROM transcripts t WHERE {' AND '.join(where)} "
            f"ORDER BY t.created_at DESC, t.id DESC LIMIT {p(search.limit + 1)}",
            p.values,
        )
        return Page([Hit(_doc(row), None, []) for row in rows[:search.limit]], len(rows) > search.limit)

    def _ranked(self, tx: Tx, owner: Owner, search: Search, cutoffs: Mapping[SourceKind, float]) -> Page:
        """The window (the most recently indexed matches, at most `search_window`) is scored in one statement and
        ordered here; only the page's documents are read whole and highlighted."""
        assert search.terms is not None
        ranking = _SqliteRanking(owner, search.terms) if self.backend == "sqlite" else \
            _PostgresRanking(owner, search.terms)
        p = Params()
        window = ranking.window(tx, p, self._filters(p, owner, search, cutoffs), self.search_window + 1)
        ranked_within = self.search_window if len(window) > self.search_window else None
        ordered = sorted(window[:self.search_window], key=ranking.order)
        if search.after is not None:
            at = next((i for i, row in enumerate(ordered) if row["id"] == search.after), None)
            if at is not None:
                ordered = ordered[at + 1:]
            else:  # not in the window (it left it as newer transcripts came, or it does not match)
                anchor = ranking.score_of(tx, self, owner, search.after)
                if anchor is None:
                    return Page([], False, ranked_within)
                ordered = [row for row in ordered if ranking.order(row) > ranking.order(anchor)]
        if search.speaker is None:
            page = ordered[:search.limit]
            marked = ranking.marked(tx, [row["doc"] for row in page]) if page else {}
            hits = []
            for row in page:
                if (found := marked.get(row["doc"])) is not None:  # else removed meanwhile (PostgreSQL)
                    hits.append(Hit(found[0], ranking.score(row["relevance"]), matches_in(*found)))
            return Page(hits, len(ordered) > search.limit, ranked_within)
        # With a speaker, a transcript that matches only in other speakers' words is passed over.
        hits = []
        for begin in range(0, min(len(ordered), MAX_EXAMINED), _SPEAKER_BATCH):
            batch = ordered[begin:begin + _SPEAKER_BATCH]
            marked = ranking.marked(tx, [row["doc"] for row in batch])
            for row in batch:
                found = marked.get(row["doc"])
                if found is None:
                    continue  # removed meanwhile (PostgreSQL reads each statement's own snapshot)
                matches = matches_in(found[0], found[1], search.speaker)
                if matches:
                    hits.append(Hit(found[0], ranking.score(row["relevance"]), matches))
                if len(hits) > search.limit:
                    return Page(hits[:search.limit], True, ranked_within)
        return Page(hits, len(ordered) > MAX_EXAMINED, ranked_within)


class _SqliteRanking:
    """FTS5: `bm25()` (lower is better), the owner's tag in the MATCH so that only the caller's transcripts are
    ranked, `highlight()` for the matched words. (The service's tag, in every row of the service, is left to the
    `service` filter: in the MATCH it would only cost bm25() a pass over its whole doclist.)"""

    def __init__(self, owner: Owner, terms: list[Term]) -> None:
        parts = [] if owner.is_admin else [f'tags : "{owner_tag(owner.name)}"']
        parts += [f'text : "{term.text}"' + (" *" if term.prefix else "") for term in terms]
        self.match = " AND ".join(parts)  # every term is a quoted string of letters, digits and spaces: no syntax

    @staticmethod
    def order(row: Mapping[str, Any]) -> tuple[float, str]:
        return row["relevance"], row["id"]

    def score(self, rank: float) -> float:
        return round(-rank, 6)

    def score_of(self, tx: Tx, index: TranscriptIndex, owner: Owner, doc_id: str) -> dict[str, Any] | None:
        doc = index.doc_number(tx, owner, doc_id)
        if doc is None:
            return None
        rows = tx.execute("SELECT bm25(transcript_fts, 1.0, 0.0) AS relevance FROM transcript_fts WHERE transcript_fts "
                          "MATCH $1 AND rowid = $2", (self.match, doc))
        return {"relevance": rows[0]["relevance"], "id": doc_id} if rows else None

    def window(self, tx: Tx, p: Params, where: list[str], size: int) -> list[dict[str, Any]]:
        # CROSS JOIN: SQLite walks the full-text matches, newest first (FTS5 gives rowids in order), and looks each
        # up; bm25() is computed only for the rows the LIMIT lets through.
        return tx.execute(
            f"SELECT t.doc AS doc, t.id AS id, bm25(transcript_fts, 1.0, 0.0) AS relevance FROM transcript_fts "
            f"CROSS JOIN transcripts t ON t.doc = transcript_fts.rowid WHERE transcript_fts MATCH {p(self.match)} AND "
            f"{' AND '.join(where)} ORDER BY transcript_fts.rowid DESC LIMIT {p(size)}",
            p.values,
        )

    def marked(self, tx: Tx, docs: list[int]) -> dict[int, tuple[TranscriptDoc, list[tuple[int, int]]]]:
        """One statement for the page: the match over the page's span of rowids, `+rowid IN (...)` kept from FTS5
        (which would run the whole match again for each rowid, expanding a prefix each time) and applied before
        highlight() is computed."""
        listed = ", ".join(str(int(doc)) for doc in docs)
        rows = tx.execute(
            f"SELECT {_DOC_COLUMNS}, highlight(transcript_fts, 0, $1, $2) AS marked FROM transcript_fts "
            "CROSS JOIN transcripts t ON t.doc = transcript_fts.rowid WHERE transcript_fts MATCH $3 AND "
            f"transcript_fts.rowid BETWEEN $4 AND $5 AND +transcript_fts.rowid IN ({listed})",
            (MARK_START, MARK_END, self.match, min(docs), max(docs)),
        )
        return {row["doc"]: (_doc(row), marked_ranges(row["marked"])) for row in rows}


class _PostgresRanking:
    """`tsv @@ query` through the GIN index, the owner's tag in the query (a lexeme of `tsv` since migration 2) so
    that the index finds only the caller's transcripts; `ts_rank(tsv, query, 1)` (higher is better) over the text's
    terms alone. Each term is its own parameter: `phraseto_tsquery` for words and phrases, `to_tsquery('<word>':*)` for
    a prefix (the word is letters and digits only). The matched words are found as `highlight` says."""

    def __init__(self, owner: Owner, terms: list[Term]) -> None:
        self.terms = terms
        self.tag = None if owner.is_admin else owner_tag(owner.name)

    def query(self, p: Params, terms: list[Term] | None = None) -> str:
        parts = []
        for term in self.terms if terms is None else terms:
            if term.prefix:
                lexeme = p("'" + term.text + "':*")
                parts.append(f"to_tsquery('{TEXT_SEARCH_CONFIG}', {lexeme})")
            else:
                parts.append(f"phraseto_tsquery('{TEXT_SEARCH_CONFIG}', {p(term.text)})")
        return "(" + " && ".join(parts) + ")"

    def matching(self, tx: Tx, p: Params) -> str:
        """The condition that finds the caller's matching transcripts through the GIN indexes: the text's terms in
        `tsv`; a prefix whose stem has 3 or 4 letters as one lexeme of the prefix index (schema.PREFIXES); the
        owner's tag in each."""
        prefixes = {term.text for term in self.terms if term.prefix}
        stems = self._stems(tx, prefixes) if prefixes else {}
        indexed: dict[Term, str] = {}
        for term in self.terms:
            lexemes = stems.get(term.text, []) if term.prefix else []
            if len(lexemes) == 1 and len(lexemes[0]) in PREFIX_LENGTHS:
                indexed[term] = lexemes[0]
        rest = [term for term in self.terms if term not in indexed]
        tag = [] if self.tag is None else [repr_lexeme(TAG_MARK + self.tag)]
        conditions = []
        if rest:
            query = self.query(p, rest)
            conditions.append(f"t.tsv @@ {query}")  # apart from the tag's: a query of stop words alone matches nothing
            if tag:
                conditions.append(f"t.tsv @@ {p(tag[0])}::tsquery")
        if indexed:
            lexemes = sorted({repr_lexeme(stem) for stem in indexed.values()}) + tag
            conditions.append(f"{PREFIXES} @@ {p(' & '.join(lexemes))}::tsquery")  # the index's expression
        return " AND ".join(conditions)

    @staticmethod
    def order(row: Mapping[str, Any]) -> tuple[float, str]:
        return -row["relevance"], row["id"]

    def score(self, rank: float) -> float:
        return round(float(rank), 6)

    def score_of(self, tx: Tx, index: TranscriptIndex, owner: Owner, doc_id: str) -> dict[str, Any] | None:
        p = Params()
        query = self.query(p)
        rows = tx.execute(
            f"SELECT ts_rank(t.tsv, {query}, 1)::double precision AS relevance FROM transcripts t WHERE t.service = "
            f"{p(index.service)} AND t.id = {p(doc_id)} AND {owner_filter(p, owner, 't.owner')} AND t.tsv @@ {query}",
            p.values,
        )
        return {"relevance": rows[0]["relevance"], "id": doc_id} if rows else None

    def window(self, tx: Tx, p: Params, where: list[str], size: int) -> list[dict[str, Any]]:
        # ts_rank() reads (detoasts) each document's vector: only the window's, after the LIMIT.
        matching = self.matching(tx, p)
        query = self.query(p)
        return tx.execute(
            f"SELECT w.doc AS doc, w.id AS id, ts_rank(w.tsv, {query}, 1)::double precision AS relevance FROM "
            f"(SELECT t.doc, t.id, t.tsv FROM transcripts t WHERE {matching} AND {' AND '.join(where)} "
            f"ORDER BY t.doc DESC LIMIT {p(size)}) w",
            p.values,
        )

    def marked(self, tx: Tx, docs: list[int]) -> dict[int, tuple[TranscriptDoc, list[tuple[int, int]]]]:
        """The documents, and where the query's words are in each (see `highlight`)."""
        rows = tx.execute(f"SELECT {_DOC_COLUMNS} FROM transcripts t WHERE t.doc = ANY($1)", (docs,))
        found = {row["doc"]: _doc(row) for row in rows}
        query = QueryLexemes.of(self.terms, self._stems(tx, query_words(self.terms)))
        starts = query.word_starts()
        places = {number: words_beginning(doc.text, starts) for number, doc in found.items()}
        candidates = {word for words in places.values() for word in words}
        matching = {word for word, lexemes in self._stems(tx, candidates).items() if query.matches(lexemes)}
        return {number: (doc, sorted(span for word, spans in places[number].items() if word in matching
                                     for span in spans))
                for number, doc in found.items()}

    @staticmethod
    def _stems(tx: Tx, words: set[str]) -> dict[str, list[str]]:
        if not words:
            return {}
        rows = tx.execute(f"SELECT w, tsvector_to_array(to_tsvector('{TEXT_SEARCH_CONFIG}', w)) AS lexemes "
                          "FROM unnest($1::text[]) AS w", (sorted(words),))
        return {row["w"]: row["lexemes"] for row in rows}


def open_transcript_index(settings: ServiceSettings, service: str) -> TranscriptIndex:
    target = settings.jobs_database_url or settings.data_dir / SQLITE_FILE
    db = open_database(target, TRANSCRIPTS_SCHEMA, pool_size=4, name="whisper-transcripts")
    return TranscriptIndex(db, service, search_window=settings.transcript_search_window)
