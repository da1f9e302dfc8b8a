"""Transcript search (`GET /v1/transcripts`) over 100,000 synthetic transcripts of about 10 minutes each, on SQLite
(FTS5, `DATA_DIR/transcripts.sqlite3`) and PostgreSQL (`tsvector` + GIN): search latency p50/p95 per kind of query
(the library's own `TranscriptIndex.search`, as the route calls it: ranking, the owner filter, retention cutoffs,
highlighting and decoding the page), and the index's size per hour of audio.

    python -m bench.bench_transcripts [--docs 100000] [--owners 20] [--runs 20] [--postgres URL] [--no-write]
    python -m bench.bench_transcripts --only sqlite > sqlite.json & python -m bench.bench_transcripts --only postgresql \
        > postgresql.json; wait; python -m bench.bench_transcripts --merge sqlite.json postgresql.json

Without `--postgres` a throwaway server is started as the tests start one (Debian's binaries, `fsync=off`). The
transcripts are generated, not transcribed: ~1,440 words in 120 segments of 5 s each (10 minutes at 144 words a
minute), drawn from a Zipf distribution over 40,000 made-up words (a few words in every transcript, most in few),
with planted words of known frequency (`budget` in 0.1 % of the transcripts, `quarterly` in 2 %, `roadmap` in 10 %,
the phrase "next quarter" in 1 %), 1 to 4 speakers each, owned by `--owners` owners in turn. They are loaded in bulk
(executemany / COPY) into the schema the migrations made; PostgreSQL's GIN index is built once after the load (the
same definitions as the migrations': `tsv` with its owner tags, the prefixes), as bulk loads do. A search is timed from the
call to the page of hits (`TranscriptIndex.search_page`, with the default TRANSCRIPT_SEARCH_WINDOW).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg

from bench.bench_migrations import postgres
from bench.report import table, write_section
from whisper_common.db import open_database
from whisper_common.owners import Owner, Role
from whisper_common.transcripts.model import SourceKind
from whisper_common.transcripts.query import parse_query
from whisper_common.transcripts.schema import PREFIXES, TRANSCRIPTS_SCHEMA
from whisper_common.transcripts.store import SEARCH_WINDOW, Search, TranscriptIndex, owner_tag, service_tag

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "whisper_faster"
SEGMENTS_PER_DOC = 120
SEGMENT_SECONDS = 5.0
VOCABULARY = 40_000
SEGMENT_POOL = 200_000
PLANTED = {"budget": 0.001, "quarterly": 0.02, "roadmap": 0.10}
PHRASE, PHRASE_SHARE = "next quarter", 0.01
SPEAKERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
NOW = time.time()
DAY = 86400.0
TARGET_P95_MS = 50.0


def _vocabulary(rng: random.Random) -> list[str]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(syllables) for _ in range(rng.choice((2, 2, 3, 3, 4)))))
    vocabulary = sorted(words - set(PLANTED) - set(PHRASE.split()))
    rng.shuffle(vocabulary)  # Zipf ranks in no alphabetical order: a prefix covers words of every frequency
    return vocabulary


def _segment_pool(vocabulary: list[str], seed: int) -> list[str]:
    generator = np.random.default_rng(seed)
    ranks = np.arange(1, len(vocabulary) + 1)
    weights = 1.0 / ranks**1.07
    lengths = generator.integers(8, 17, SEGMENT_POOL)
    picks = generator.choice(len(vocabulary), size=int(lengths.sum()), p=weights / weights.sum())
    pool, at = [], 0
    for length in lengths:
        pool.append(" ".join(vocabulary[i] for i in picks[at:at + length]))
        at += length
    return pool


@dataclass(frozen=True)
class Corpus:
    docs: int
    owners: int
    seed: int = 7

    def owner(self, number: int) -> str:
        return f"team-{number % self.owners:02d}"

    def rows(self) -> Iterator[tuple]:
        """(doc, id, service, source, owner, created_at, ended_at, model, language, duration, speakers, tags,
        segments, text) and the doc's speakers, as `TranscriptIndex.add` writes them."""
        rng = random.Random(self.seed)
        vocabulary = _vocabulary(rng)
        pool = _segment_pool(vocabulary, self.seed)
        service = service_tag(SERVICE)
        for number in range(self.docs):
            owner = self.owner(number)
            speakers = sorted(rng.sample(SPEAKERS, rng.randint(1, 4)))
            texts = [pool[rng.randrange(SEGMENT_POOL)] for _ in range(SEGMENTS_PER_DOC)]
            for word, share in PLANTED.items():
                if rng.random() < share:
                    at = rng.randrange(SEGMENTS_PER_DOC)
                    texts[at] = f"{texts[at]} {word}"
            if rng.random() < PHRASE_SHARE:
                at = rng.randrange(SEGMENTS_PER_DOC)
                texts[at] = f"{PHRASE} {texts[at]}"
            segments, offset = [], 0
            for index, text in enumerate(texts):
                start = index * SEGMENT_SECONDS
                segments.append([start, start + SEGMENT_SECONDS, rng.randrange(len(speakers)), offset, len(text)])
                offset += len(text) + 1
            created = NOW - 20 * DAY + number * (19 * DAY / self.docs)
            source = SourceKind.REALTIME.value if number % 5 == 0 else SourceKind.JOB.value
            yield ((number + 1, f"job_{number:032x}", SERVICE, source, owner, created,
                    created + SEGMENTS_PER_DOC * SEGMENT_SECONDS, "tiny.en", "en", SEGMENTS_PER_DOC * SEGMENT_SECONDS,
                    json.dumps(speakers), f"{owner_tag(owner)} {service}", json.dumps(segments, separators=(",", ":")),
                    "\n".join(texts)), speakers)

    @property
    def hours(self) -> float:
        return self.docs * SEGMENTS_PER_DOC * SEGMENT_SECONDS / 3600


COLUMNS = ("doc, id, service, source, owner, created_at, ended_at, model, language, duration, speakers, tags, "
           "segments, text")


def load_sqlite(path: Path, corpus: Corpus) -> float:
    open_database(path, TRANSCRIPTS_SCHEMA).close()  # the schema, through the migrations
    started = time.perf_counter()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        batch: list[tuple] = []
        speakers: list[tuple[str, int]] = []

        def flush() -> None:
            connection.executemany(f"INSERT INTO transcripts ({COLUMNS}) VALUES ({', '.join('?' * 14)})", batch)
            connection.executemany("INSERT INTO transcript_speakers (speaker, doc) VALUES (?, ?)", speakers)
            connection.commit()
            batch.clear()
            speakers.clear()

        for row, names in corpus.rows():
            batch.append(row)
            speakers.extend((name, row[0]) for name in names)
            if len(batch) >= 5000:
                flush()
        flush()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return time.perf_counter() - started


def load_postgres(url: str, corpus: Corpus) -> float:
    open_database(url, TRANSCRIPTS_SCHEMA).close()
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP INDEX transcripts_tsv")
        connection.execute("DROP INDEX transcripts_prefixes")
        with connection.transaction(), connection.cursor() as cursor:
            with cursor.copy(f"COPY transcripts ({COLUMNS}) FROM STDIN") as copy:
                speakers: list[tuple[str, int]] = []
                for row, names in corpus.rows():
                    copy.write_row(row)
                    speakers.extend((name, row[0]) for name in names)
            with cursor.copy("COPY transcript_speakers (speaker, doc) FROM STDIN") as names_copy:
                for pair in speakers:
                    names_copy.write_row(pair)
        connection.execute("SET maintenance_work_mem = '512MB'")
        connection.execute("CREATE INDEX transcripts_tsv ON transcripts USING GIN (tsv)")  # as migration 2 has them
        connection.execute(f"CREATE INDEX transcripts_prefixes ON transcripts USING GIN ({PREFIXES})")
        connection.execute("VACUUM ANALYZE transcripts")
        connection.execute("VACUUM ANALYZE transcript_speakers")
    return time.perf_counter() - started


@dataclass(frozen=True)
class Query:
    name: str
    q: str | None
    speaker: str | None = None
    admin: bool = False
    source: SourceKind | None = None


QUERIES = [
    Query("rare word (0.1 % of transcripts)", "budget"),
    Query("word in 2 %", "quarterly"),
    Query("word in 10 %", "roadmap"),
    Query("frequent word (in most transcripts)", "{common}"),
    Query("two words", "roadmap {common}"),
    Query("phrase in 1 %", f'"{PHRASE}"'),
    Query("prefix (`{prefix}*`)", "{prefix}*"),
    Query("word in 2 %, speaker filter", "quarterly", speaker="alice"),
    Query("word in 2 %, source=realtime", "quarterly", source=SourceKind.REALTIME),
    Query("no q: newest first", None),
    Query("admin: word in 2 %, every owner", "quarterly", admin=True),
    Query("admin: word in 10 %, every owner", "roadmap", admin=True),
]


def common_words(corpus: Corpus) -> tuple[str, str]:
    """A word of Zipf rank 20 (in nearly every transcript), and a 3-letter prefix shared by many words."""
    vocabulary = _vocabulary(random.Random(corpus.seed))
    common = vocabulary[19]
    return common, common[:3]


def measure(index: TranscriptIndex, corpus: Corpus, runs: int) -> list[tuple[str, list[float], int]]:
    common, prefix = common_words(corpus)
    cutoffs = {SourceKind.JOB: NOW - 30 * DAY, SourceKind.REALTIME: NOW - 30 * DAY}
    results = []
    for query in QUERIES:
        timings, hits_seen, windowed = [], 0, 0
        text = query.q.format(common=common, prefix=prefix) if query.q else None
        for run in range(runs + 2):
            owner = Owner("admin", Role.ADMIN) if query.admin else Owner(corpus.owner(run))
            started = time.perf_counter()
            terms = parse_query(text) if text else None
            page = index.search_page(owner, Search(terms=terms, speaker=query.speaker, source=query.source, limit=20),
                                     cutoffs)
            elapsed = time.perf_counter() - started
            if run >= 2:  # the first two warm the caches
                timings.append(elapsed * 1000)
                hits_seen += len(page.hits)
                windowed += page.ranked_within is not None
            if text:
                assert all(hit.matches for hit in page.hits), f"{query.name}: a hit without its moment"
        results.append((query.name.format(prefix=prefix), timings, hits_seen // runs, windowed / runs if text else None))
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sqlite_size(path: Path) -> tuple[int, int]:
    """The file's bytes, and those of the full-text index's tables (dbstat, where SQLite has it)."""
    total = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    with sqlite3.connect(path) as connection:
        try:
            fts = connection.execute("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'transcript_fts%'").fetchone()[0]
        except sqlite3.OperationalError:
            fts = 0
    connection.close()
    return total, int(fts or 0)


def postgres_size(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as connection:
        total = connection.execute("SELECT pg_total_relation_size('transcripts') + "
                                   "pg_total_relation_size('transcript_speakers')").fetchone()[0]
        gin = connection.execute("SELECT pg_relation_size('transcripts_tsv') + pg_relation_size('transcripts_prefixes')"
                                 ).fetchone()[0]
    return int(total), int(gin)


def mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def run_sqlite(corpus: Corpus, runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-transcripts-") as directory:
        path = Path(directory) / "transcripts.sqlite3"
        load_seconds = load_sqlite(path, corpus)
        print(f"sqlite: {corpus.docs} transcripts loaded in {load_seconds:.0f} s", file=sys.stderr, flush=True)
        db = open_database(path, TRANSCRIPTS_SCHEMA)
        results = measure(TranscriptIndex(db, SERVICE), corpus, runs)
        db.close()
        total, part = sqlite_size(path)
    return {"SQLite (FTS5)": {"results": results, "size": [total, part, load_seconds], "version": sqlite3.sqlite_version}}


def run_postgres(corpus: Corpus, runs: int, url: str | None) -> dict:
    with postgres(url) as server:
        load_seconds = load_postgres(server, corpus)
        print(f"postgresql: {corpus.docs} transcripts loaded in {load_seconds:.0f} s", file=sys.stderr, flush=True)
        db = open_database(server, TRANSCRIPTS_SCHEMA)
        results = measure(TranscriptIndex(db, SERVICE), corpus, runs)
        db.close()
        total, part = postgres_size(server)
        with psycopg.connect(server) as connection:
            version = connection.execute("SHOW server_version").fetchone()[0]
    return {"PostgreSQL (tsvector + GIN)": {"results": results, "size": [total, part, load_seconds],
                                            "version": version}}


def report(measured: dict, corpus: Corpus, runs: int, window: int = SEARCH_WINDOW) -> str:
    rows = []
    for name, entry in measured.items():
        for query, timings, hits, *windowed in entry["results"]:
            share = f"{windowed[0]:.0%}" if windowed and windowed[0] is not None else "–"
            rows.append([name, query, hits, share, f"{pct(timings, 0.5):.1f}", f"{pct(timings, 0.95):.1f}",
                         f"{max(timings):.1f}"])
    user = {name: [t for query, timings, *_ in entry["results"] if not query.startswith("admin") for t in timings]
            for name, entry in measured.items()}
    summary = [[name, f"{pct(t, 0.5):.1f}", f"{pct(t, 0.95):.1f}", "yes" if pct(t, 0.95) <= TARGET_P95_MS else "**no**"]
               for name, t in user.items()]
    size_rows = [[name, mb(total), mb(part), f"{total / corpus.hours / 1e3:,.0f} kB", f"{load:.0f} s"]
                 for name, (total, part, load) in ((n, e["size"]) for n, e in measured.items())]
    versions = ", ".join(f"{name.split()[0]} {entry['version'].split()[0]}" for name, entry in measured.items())
    return f"""{corpus.docs:,} synthetic transcripts of 10 minutes ({corpus.hours:,.0f} hours of audio, ~1,440 words
each in {SEGMENTS_PER_DOC} segments), {corpus.owners} owners ({corpus.docs // corpus.owners:,} transcripts each);
{versions} (PostgreSQL: a throwaway server, `fsync=off`, default memory settings). Each kind of query ran {runs}
times (after 2 warm-up runs), a user's searches rotating over the owners; a search is `TranscriptIndex.search_page` (what
`GET /v1/transcripts` calls): the ranked page of 20 with each hit's matching segments (time, speaker, snippet), or
the newest 20 without `q`. Target: p95 ≤ {TARGET_P95_MS:.0f} ms for an owner's searches (every row below but the
admin's).

{table(["database", "p50 ms", "p95 ms", f"p95 ≤ {TARGET_P95_MS:.0f} ms"], summary)}

{table(["database", "query", "hits per page", f"more matches than the window ({window:,})", "p50 ms", "p95 ms",
         "max ms"], rows)}

A search with `q` ranks the {window:,} most recently indexed matches of the caller (TRANSCRIPT_SEARCH_WINDOW, the
default), filters applied; the fourth column is the share of the searches where more matched (the answer's
`ranked_within`), so that the page is the best of the newest {window:,}, not of all.

Index size (text, segments with times and speakers, the full-text index and the filters' indexes; SQLite's file, or
PostgreSQL's tables with their indexes and TOAST; the full-text index alone: SQLite's FTS5 tables with their prefix
indexes, PostgreSQL's two GIN indexes, its stored `tsv` column counting in the table) and the bulk load's time (generating the transcripts included):

{table(["database", "total", "full-text index alone", "per hour of audio", "load"], size_rows)}

The frequent-word rows are the worst case for ranking: without the window every transcript of the owner that holds
the word would be scored before the best 20 are known. An admin's search ranks every owner's transcripts (the window
holds the newest of them all).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--owners", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20, help="searches timed per kind of query and database")
    parser.add_argument("--postgres", help="a PostgreSQL URL (a database of its own); default: a throwaway server")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="measure one database and print its JSON "
                        "(to run both at once and --merge them)")
    parser.add_argument("--merge", nargs="+", type=Path, help="write the section from the JSON of --only runs")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/benchmarks.md")
    parser.add_argument("--note", default="", help="a line about the run for the section (e.g. the machine's load)")
    args = parser.parse_args()
    corpus = Corpus(args.docs, args.owners)
    measured: dict = {}
    if args.merge:
        for path in args.merge:
            measured.update(json.loads(path.read_text()))
    else:
        if args.only in (None, "sqlite"):
            measured.update(run_sqlite(corpus, args.runs))
        if args.only in (None, "postgresql"):
            measured.update(run_postgres(corpus, args.runs, args.postgres))
        if args.only:
            print(json.dumps(measured))
            return 0
    load = os.getloadavg()[1]
    print(f"load average (5 min) now: {load:.1f} on {os.cpu_count()} cores", file=sys.stderr)
    body = report(measured, corpus, args.runs) + (f"\n{args.note}\n" if args.note else "")
    print(body)
    if not args.no_write:
        write_section("transcripts", f"Transcript search: {args.docs:,} transcripts on SQLite and PostgreSQL", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
