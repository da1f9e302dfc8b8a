"""The transcript index's contract, on SQLite (FTS5) and a real PostgreSQL (tsvector + GIN): ranked full-text search
with stemming, phrases and prefixes; the moment (time, speaker) of each match; each owner its own, an admin all;
filters; pages that follow each other; retention; erasure that leaves nothing behind."""
from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs.postgres import postgres_server
from whisper_common.db import open_database
from whisper_common.owners import Owner, Role
from whisper_common.transcripts.model import SourceKind, TranscriptDoc, build_doc
from whisper_common.transcripts.query import parse_query
from whisper_common.transcripts.schema import TRANSCRIPTS_SCHEMA
from whisper_common.transcripts.store import Search, TranscriptIndex

TEAM_A, TEAM_B, ADMIN = Owner("team-a"), Owner("team-b"), Owner("boss", Role.ADMIN)
NOW = 1_750_000_000.0
JFK = [(0.0, 3.6, None, " And so, my fellow Americans,"), (3.6, 8.2, None, " ask not what your country can do for you,"),
       (8.2, 11.0, None, " ask what you can do for your country.")]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TranscriptIndex]:
    if request.param == "sqlite":
        db = open_database(tmp_path / "transcripts.sqlite3", TRANSCRIPTS_SCHEMA)
    else:
        db = open_database(request.getfixturevalue("postgres_url"), TRANSCRIPTS_SCHEMA)
    yield TranscriptIndex(db, f"svc-{uuid.uuid4().hex[:8]}")  # a service of its own: tests share the PostgreSQL
    db.close()


def doc(doc_id: str, owner: str = "team-a", segments: list | None = None, *, source: SourceKind = SourceKind.JOB,
        created_at: float = NOW, ended_at: float | None = None) -> TranscriptDoc:
    return build_doc(id=doc_id, source=source, owner=owner, created_at=created_at,
                     ended_at=created_at + 60 if ended_at is None else ended_at, model="tiny.en", language="en",
                     duration=max((s[1] for s in segments or JFK), default=0.0), segments=segments or JFK)


def ids(index: TranscriptIndex, owner: Owner, q: str | None = None, **filters) -> list[str]:
    hits, _ = index.search(owner, Search(terms=parse_query(q) if q else None, **filters), {})
    return [hit.doc.id for hit in hits]


def test_words_phrases_prefixes_and_stems_are_found_at_their_moment(index: TranscriptIndex) -> None:
    index.add(doc("job_jfk"))
    index.add(doc("job_other", segments=[(0.0, 2.0, None, "Nothing to see here.")]))
    for q in ("country", "countries", '"fellow Americans"', "americ*", "ASK COUNTRY", "ask, country!"):
        hits, more = index.search(TEAM_A, Search(terms=parse_query(q)), {})
        assert [hit.doc.id for hit in hits] == ["job_jfk"] and not more, q
    assert ids(index, TEAM_A, '"Americans fellow"') == [] and ids(index, TEAM_A, "country nothing") == []

    [hit] = index.search(TEAM_A, Search(terms=parse_query("countries")), {})[0]
    assert hit.score is not None and [(m.segment, m.start, m.end) for m in hit.matches] == [(1, 3.6, 8.2), (2, 8.2, 11.0)]
    first = hit.matches[0]
    assert first.snippet == "ask not what your country can do for you,"
    assert [first.snippet[a:b] for a, b in first.highlights] == ["country"]
    [fellow] = index.search(TEAM_A, Search(terms=parse_query('"fellow Americans"')), {})[0]
    assert [(m.start, " ".join(m.snippet[a:b] for a, b in m.highlights).split()) for m in fellow.matches] == \
        [(0.0, ["fellow", "Americans"])]  # FTS5 marks the phrase as one range, PostgreSQL each word


def test_more_matches_rank_higher(index: TranscriptIndex) -> None:
    index.add(doc("job_once", segments=[(0.0, 5.0, None, "The budget is due, and so are many other things we must do.")]))
    index.add(doc("job_often", segments=[(0.0, 5.0, None, "Budget, budget, budget: the budget decides.")]))
    index.add(doc("job_never", segments=[(0.0, 5.0, None, "Nothing about money.")]))
    hits, _ = index.search(TEAM_A, Search(terms=parse_query("budget")), {})
    assert [hit.doc.id for hit in hits] == ["job_often", "job_once"]
    assert hits[0].score is not None and hits[1].score is not None and hits[0].score > hits[1].score


def test_each_owner_finds_only_its_own_and_an_admin_all(index: TranscriptIndex) -> None:
    index.add(doc("job_a"))
    index.add(doc("sess_b", "team-b", source=SourceKind.REALTIME))
    assert ids(index, TEAM_A, "country") == ["job_a"] and ids(index, TEAM_B, "country") == ["sess_b"]
    assert sorted(ids(index, ADMIN, "country")) == ["job_a", "sess_b"]
    assert ids(index, TEAM_A) == ["job_a"] and sorted(ids(index, ADMIN)) == ["job_a", "sess_b"]
    assert index.get(TEAM_A, "sess_b") is None and index.get(ADMIN, "sess_b") is not None
    assert ids(index, TEAM_A, "country", after="sess_b") == [] and ids(index, TEAM_A, after="sess_b") == []
    # What FTS5 would read as a column filter or an operator is text: no term reaches another owner's tags.
    for q in ('tags : "ow7465616d2d62"', "ow7465616d2d62", "tags:ow7465616d2d62 OR country", "NEAR(country ow7465616d2d62)"):
        assert ids(index, TEAM_A, q) == [], q
    assert ids(index, TEAM_A, "ow7465616d2d61") == []  # not even its own tag


def test_filters_by_source_time_and_speaker(index: TranscriptIndex) -> None:
    meeting = [(0.0, 4.0, "Alice", "We decided the budget today."), (4.0, 8.0, "Bob", "The budget is approved."),
               (8.0, 9.5, "Alice", "Thanks everyone.")]
    index.add(doc("job_meeting", segments=meeting, created_at=NOW))
    index.add(doc("sess_call", segments=[(0.0, 3.0, "Bob", "Call me about the budget.")], source=SourceKind.REALTIME,
                  created_at=NOW + 86400))
    index.add(doc("job_bob_only", segments=[(0.0, 3.0, "Alice", "Hello."), (3.0, 6.0, "Bob", "Budget again.")],
                  created_at=NOW + 2 * 86400))
    assert ids(index, TEAM_A, "budget", source=SourceKind.REALTIME) == ["sess_call"]
    assert sorted(ids(index, TEAM_A, "budget", source=SourceKind.JOB)) == ["job_bob_only", "job_meeting"]
    assert ids(index, TEAM_A, "budget", created_from=NOW + 3600, created_to=NOW + 86400 + 1) == ["sess_call"]
    assert ids(index, TEAM_A, created_to=NOW) == ["job_meeting"]

    hits, _ = index.search(TEAM_A, Search(terms=parse_query("budget"), speaker="Alice"), {})
    assert [hit.doc.id for hit in hits] == ["job_meeting"]  # job_bob_only: Alice speaks, but not of the budget
    assert [(m.speaker, m.start) for m in hits[0].matches] == [("Alice", 0.0)]
    hits, _ = index.search(TEAM_A, Search(terms=parse_query("budget"), speaker="Bob"), {})
    assert sorted(hit.doc.id for hit in hits) == ["job_bob_only", "job_meeting", "sess_call"]
    assert {m.speaker for hit in hits for m in hit.matches} == {"Bob"}
    assert ids(index, TEAM_A, speaker="Alice") == ["job_bob_only", "job_meeting"]  # newest first
    assert ids(index, TEAM_A, "budget", speaker="Carol") == []


@pytest.mark.parametrize("ranked", [True, False])
def test_pages_follow_each_other(index: TranscriptIndex, ranked: bool) -> None:
    for number in range(25):
        words = " ".join(["budget"] * (1 + number % 4))  # ties in score, broken by id
        index.add(doc(f"job_{number:02d}", segments=[(0.0, 2.0, None, f"{words} number {number}.")],
                      created_at=NOW + number // 2))
    seen: list[str] = []
    scores: list[float] = []
    after = None
    while True:
        hits, more = index.search(TEAM_A, Search(terms=parse_query("budget") if ranked else None, limit=10,
                                                 after=after), {})
        seen += [hit.doc.id for hit in hits]
        scores += [hit.score for hit in hits if hit.score is not None]
        if not more:
            break
        after = hits[-1].doc.id
    assert sorted(seen) == [f"job_{n:02d}" for n in range(25)] and len(seen) == 25
    if ranked:
        assert scores == sorted(scores, reverse=True)
    else:
        assert seen == sorted(seen, key=lambda i: (NOW + int(i[4:]) // 2, i), reverse=True)


def test_retention_hides_at_once_and_removes(index: TranscriptIndex) -> None:
    index.add(doc("job_old", ended_at=NOW))
    index.add(doc("sess_old", source=SourceKind.REALTIME, ended_at=NOW))
    index.add(doc("job_new", ended_at=NOW + 100))
    cutoffs = {SourceKind.JOB: NOW + 50, SourceKind.REALTIME: NOW + 1}
    hits, _ = index.search(TEAM_A, Search(terms=parse_query("country")), cutoffs)
    assert [hit.doc.id for hit in hits] == ["job_new"]
    assert index.remove_ended_before(SourceKind.JOB, NOW + 50) == 1
    assert index.remove_ended_before(SourceKind.REALTIME, NOW + 1) == 1
    assert ids(index, ADMIN, "country") == ["job_new"] and index.count() == 1


def test_a_document_indexed_again_replaces_the_first(index: TranscriptIndex) -> None:
    index.add(doc("job_x", segments=[(0.0, 1.0, None, "first version")]))
    index.add(doc("job_x", segments=[(0.0, 1.0, "Bob", "second version")]))
    assert index.count() == 1 and ids(index, TEAM_A, "first") == [] and ids(index, TEAM_A, "second") == ["job_x"]
    assert ids(index, TEAM_A, speaker="Bob") == ["job_x"]
    assert index.remove(["job_x", "job_unknown"]) == 1 and ids(index, TEAM_A, speaker="Bob") == []


def test_erasure_leaves_nothing_of_the_owner(index: TranscriptIndex, tmp_path: Path) -> None:
    secret = "Quixotically zanzibarian marmalade"
    index.add(doc("job_keep", "team-b"))
    for number in range(3):
        index.add(doc(f"job_secret_{number}", segments=[(0.0, 2.0, "Mallory", f"{secret} {number}.")]))
    assert len(ids(index, TEAM_A, "zanzibarian")) == 3
    assert index.erase_owner("team-a") == 3
    assert ids(index, ADMIN, "zanzibarian") == [] and ids(index, ADMIN, speaker="Mallory") == []
    assert ids(index, ADMIN) == ["job_keep"]
    if index.backend == "sqlite":  # the text, the speakers and the words in FTS5's own segments: all gone from disk
        path = tmp_path / "transcripts.sqlite3"
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("transcripts.sqlite3*"))
        for word in (b"zanzibarian", b"zanzibarian".upper(), b"quixot", b"Mallory", b"marmalad", b"job_secret"):
            assert word not in raw, word
        with sqlite3.connect(path) as connection:
            assert connection.execute("SELECT COUNT(*) FROM transcript_speakers").fetchone() == (0,)
            assert connection.execute("INSERT INTO transcript_fts (transcript_fts) VALUES ('integrity-check')")
    else:
        with index.db.transaction() as tx:
            assert tx.execute("SELECT COUNT(*) AS n FROM transcripts WHERE service = $1 AND owner = 'team-a'",
                              (index.service,))[0]["n"] == 0
            assert tx.execute("SELECT COUNT(*) AS n FROM transcript_speakers WHERE speaker = 'Mallory'")[0]["n"] == 0


def test_prefixes_of_every_length_find_the_words_that_begin_so(index: TranscriptIndex) -> None:
    """3 and 4 letters are read from the prefix indexes (SQLite), longer ones by expanding the prefix: the same hits,
    and the matched words (only those) highlighted. Both engines stem the prefix too (`counte` is `count`) and match it
    against the words' stems (`counties` is `counti`)."""
    index.add(doc("job_counts", segments=[(0.0, 2.0, "Ann", "The counter counted countless counties."),
                                          (2.0, 4.0, "Ann", "Nothing here but a cough.")]))
    index.add(doc("job_council", segments=[(0.0, 2.0, None, "A council met.")]))
    every = ["counter", "counted", "countless", "counties"]
    for q, found, marked in (("cou*", ["job_council", "job_counts"], every), ("coun*", ["job_council", "job_counts"],
                             every), ("count*", ["job_counts"], every), ("counte*", ["job_counts"], every),
                             ("countles*", ["job_counts"], ["countless"]), ("countz*", [], [])):
        hits, more = index.search(TEAM_A, Search(terms=parse_query(q)), {})
        assert sorted(hit.doc.id for hit in hits) == found and not more, q
        for hit in hits:
            if hit.doc.id == "job_counts":
                best = hit.matches[0]
                assert (best.start, [best.snippet[a:b] for a, b in best.highlights]) == (0.0, marked), q
                assert [m.start for m in hit.matches] == ([0.0, 2.0] if q == "cou*" else [0.0]), q  # cou*: cough
    assert ids(index, TEAM_B, "cou*") == []  # another owner's words, though the prefix is in the index
    assert ids(index, TEAM_A, "countless cou*") == ids(index, TEAM_A, "cou* coun* count*") == ["job_counts"]
    assert ids(index, TEAM_A, '"a council" coun*') == ["job_council"]
    # `the*`: SQLite's FTS5 keeps stop words, PostgreSQL's English configuration drops them (and finds nothing).
    assert ids(index, TEAM_A, "the*") == (["job_counts"] if index.backend == "sqlite" else [])
    assert ids(index, TEAM_A, "the") == (["job_counts"] if index.backend == "sqlite" else [])


def test_a_search_ranks_the_newest_matches_of_its_window_and_says_so(index: TranscriptIndex) -> None:
    index.search_window = 3
    index.add(doc("job_best_but_old", segments=[(0.0, 2.0, None, "budget budget budget budget")], created_at=NOW))
    for number in range(4):
        index.add(doc(f"job_{number}", segments=[(0.0, 2.0, None, f"the budget, item {number} of many more words")],
                      created_at=NOW + 10 + number))
    index.add(doc("job_other_owner", "team-b", segments=[(0.0, 2.0, None, "budget")], created_at=NOW + 100))
    page = index.search_page(TEAM_A, Search(terms=parse_query("budget")), {})
    assert sorted(hit.doc.id for hit in page.hits) == ["job_1", "job_2", "job_3"]  # the 3 indexed last
    assert page.ranked_within == 3 and not page.has_more
    # Pages within the window follow each other, and say the same.
    first = index.search_page(TEAM_A, Search(terms=parse_query("budget"), limit=2), {})
    rest = index.search_page(TEAM_A, Search(terms=parse_query("budget"), limit=2, after=first.hits[-1].doc.id), {})
    assert first.has_more and not rest.has_more and first.ranked_within == rest.ranked_within == 3
    assert [hit.doc.id for hit in first.hits + rest.hits] == [hit.doc.id for hit in page.hits]
    # Narrowed to fewer matches than the window: every match is ranked, and the best comes first.
    narrowed = index.search_page(TEAM_A, Search(terms=parse_query("budget"), created_to=NOW + 10), {})
    assert [hit.doc.id for hit in narrowed.hits] == ["job_best_but_old", "job_0"] and narrowed.ranked_within is None
    index.search_window = 10
    full = index.search_page(TEAM_A, Search(terms=parse_query("budget")), {})
    assert full.hits[0].doc.id == "job_best_but_old" and len(full.hits) == 5 and full.ranked_within is None
    # A page that goes on after a transcript that has left the window meanwhile: ranked below its score.
    index.search_window = 3
    after_old = index.search_page(TEAM_A, Search(terms=parse_query("budget"), after="job_best_but_old"), {})
    assert sorted(hit.doc.id for hit in after_old.hits) == ["job_1", "job_2", "job_3"]
    assert ids(index, TEAM_A, "budget", after="job_other_owner") == []


def test_a_speakers_page_examines_the_window_in_batches(index: TranscriptIndex) -> None:
    for number in range(60):
        speaker = "Bob" if number % 3 == 0 else "Alice"
        index.add(doc(f"job_{number:02d}", segments=[(0.0, 2.0, "Alice", "hello"), (2.0, 4.0, speaker,
                      f"budget {number}")], created_at=NOW + number))
    seen, after = [], None
    while True:
        hits, more = index.search(TEAM_A, Search(terms=parse_query("budget"), speaker="Bob", limit=7, after=after), {})
        seen += [hit.doc.id for hit in hits]
        assert all(m.speaker == "Bob" for hit in hits for m in hit.matches)
        if not more:
            break
        after = hits[-1].doc.id
    assert sorted(seen) == [f"job_{n:02d}" for n in range(0, 60, 3)]
