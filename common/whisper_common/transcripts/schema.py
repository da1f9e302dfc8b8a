"""The transcript index's schema (store `transcripts` in `whisper_schema_versions`), for both databases.

- `transcripts`: one row per transcript: who owns it, where it came from (`source`: job or realtime; `service`: the
  service that made it, so services sharing a database or a DATA_DIR keep apart), when it was made and ended, its
  text (the segments, one per line) and `segments` (JSON: `[start, end, speaker index or -1, offset, length]` each,
  into `speakers`, a JSON list).
- `transcript_speakers`: (speaker, doc) for the `speaker` filter.
- The full-text index. SQLite: an FTS5 table over `transcripts.text` (external content: the text is stored once),
  porter stemming over unicode61 tokens; its second column, `tags`, holds a token per owner and service, so that a
  user's search ranks only its own transcripts. PostgreSQL: a stored `tsvector` column (`english` configuration) with
  a GIN index.

Migration 2 (for search latency, docs/benchmarks.md, "Transcript search"): SQLite's FTS5 table gets prefix indexes for
prefixes of 3 and 4 letters (`FTS5_PREFIXES`; `q`'s prefixes have at least 3), so that `bud*` reads one doclist
instead of merging every word that begins so; PostgreSQL's `tsv` also holds the `tags` tokens (owner and service,
as lexemes `#<tag>` that no query term can be), so that the GIN index finds only the caller's transcripts, and a
second GIN index holds the 3- and 4-letter beginnings of the lexemes (and the tags): PostgreSQL's prefix index. Its
rows keep the segments' JSON in TOAST (`toast_tuple_target`), so that the rows a search visits are small. Both
rebuild the full-text index from the stored text (the table is rewritten on PostgreSQL): seconds per 10,000
transcripts, once.

A later change is a new `Migration` appended to `TRANSCRIPTS_SCHEMA` (docs/migrations.md).
"""
from __future__ import annotations

from whisper_common.db import Migration, MigrationContext, Schema

TEXT_SEARCH_CONFIG = "english"
FTS5_TOKENIZER = "porter unicode61 remove_diacritics 2"
FTS5_PREFIXES = "3 4"
TAG_MARK = "#"
TAGGED_TSV = (f"to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, text) || "
              f"array_to_tsvector(string_to_array('{TAG_MARK}' || replace(tags, ' ', ' {TAG_MARK}'), ' '))")
"""PostgreSQL's indexed vector since migration 2: the text's lexemes and the tags, each as a lexeme `#<tag>`, which no
term of `q` can be (they are letters and digits), nor begin (a prefix): a query never matches a tag."""

PREFIX_LENGTHS = (3, 4)
PREFIXES_FUNCTION = "whisper_transcript_prefixes"
_PREFIXES_FUNCTION = f"""CREATE OR REPLACE FUNCTION {PREFIXES_FUNCTION}(body text, tags text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT array_to_tsvector(ARRAY(
    SELECT left(lexeme, n) FROM unnest(tsvector_to_array(to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, body))) AS lexeme,
        unnest(ARRAY[{', '.join(map(str, PREFIX_LENGTHS))}]) AS n
    WHERE length(lexeme) >= n
) || string_to_array('{TAG_MARK}' || replace(tags, ' ', ' {TAG_MARK}'), ' '))
$$"""
PREFIXES = f"{PREFIXES_FUNCTION}(text, tags)"
"""PostgreSQL's prefix index since migration 2 (a GIN index over this expression, stored nowhere else; a search names
the same expression to use it): the first 3 and 4 letters of each lexeme of the text, and the tags as in `tsv`. A prefix term whose stem has 3 or 4 letters is then one lexeme to look up, where
`tsv @@ 'bud':*` makes the GIN index read and merge every lexeme that begins so (FTS5's `prefix=` indexes likewise)."""

_COLUMNS = """
    id TEXT NOT NULL,
    service TEXT NOT NULL,
    source TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    language TEXT,
    duration DOUBLE PRECISION NOT NULL,
    speakers TEXT NOT NULL,
    tags TEXT NOT NULL,
    segments TEXT NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (service, id)"""

_INDEXES = (
    "CREATE INDEX IF NOT EXISTS transcripts_owner ON transcripts (service, owner, created_at)",
    "CREATE INDEX IF NOT EXISTS transcripts_created ON transcripts (service, created_at)",
    "CREATE INDEX IF NOT EXISTS transcripts_ended ON transcripts (service, source, ended_at)",
)

_SQLITE = (
    f"CREATE TABLE IF NOT EXISTS transcripts (doc INTEGER PRIMARY KEY, {_COLUMNS})",
    *_INDEXES,
    "CREATE TABLE IF NOT EXISTS transcript_speakers (speaker TEXT NOT NULL, doc INTEGER NOT NULL, "
    "PRIMARY KEY (speaker, doc)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS transcript_speakers_doc ON transcript_speakers (doc)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS transcript_fts USING fts5(text, tags, content='transcripts', "
    f"content_rowid='doc', tokenize='{FTS5_TOKENIZER}')",
    # External content: the index follows the table through these triggers (rows are never updated, only replaced).
    "CREATE TRIGGER IF NOT EXISTS transcripts_indexed AFTER INSERT ON transcripts BEGIN "
    "INSERT INTO transcript_fts (rowid, text, tags) VALUES (new.doc, new.text, new.tags); END",
    "CREATE TRIGGER IF NOT EXISTS transcripts_unindexed AFTER DELETE ON transcripts BEGIN "
    "INSERT INTO transcript_fts (transcript_fts, rowid, text, tags) VALUES ('delete', old.doc, old.text, old.tags); "
    "DELETE FROM transcript_speakers WHERE doc = old.doc; END",
)

_POSTGRES = (
    f"CREATE TABLE IF NOT EXISTS transcripts (doc BIGSERIAL PRIMARY KEY, {_COLUMNS}, "
    f"tsv tsvector GENERATED ALWAYS AS (to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, text)) STORED)",
    *_INDEXES,
    "CREATE INDEX IF NOT EXISTS transcripts_tsv ON transcripts USING GIN (tsv)",
    "CREATE TABLE IF NOT EXISTS transcript_speakers (speaker TEXT NOT NULL, "
    "doc BIGINT NOT NULL REFERENCES transcripts (doc) ON DELETE CASCADE, PRIMARY KEY (speaker, doc))",
    "CREATE INDEX IF NOT EXISTS transcript_speakers_doc ON transcript_speakers (doc)",
)


def _create(context: MigrationContext) -> None:
    for statement in _POSTGRES if context.db.backend == "postgresql" else _SQLITE:
        context.execute(statement)


def _fts_for_search(context: MigrationContext) -> None:
    if context.db.backend == "postgresql":
        context.execute(_PREFIXES_FUNCTION)
        # Rows of a few hundred bytes (the segments' JSON goes to TOAST with the text and the vector), so that the
        # rows a search visits stay in the buffer cache; it takes effect in the rewrite that follows.
        context.execute("ALTER TABLE transcripts SET (toast_tuple_target = 256)")
        context.execute(f"ALTER TABLE transcripts DROP COLUMN tsv, "  # its GIN index goes with it
                        f"ADD COLUMN tsv tsvector GENERATED ALWAYS AS ({TAGGED_TSV}) STORED")
        context.execute("CREATE INDEX IF NOT EXISTS transcripts_tsv ON transcripts USING GIN (tsv)")
        context.execute(f"CREATE INDEX IF NOT EXISTS transcripts_prefixes ON transcripts USING GIN ({PREFIXES})")
        return
    # The triggers name the table, not its definition: they keep working on the new one.
    context.execute("DROP TABLE transcript_fts")
    context.execute("CREATE VIRTUAL TABLE transcript_fts USING fts5(text, tags, content='transcripts', "
                    f"content_rowid='doc', tokenize='{FTS5_TOKENIZER}', prefix='{FTS5_PREFIXES}')")
    context.execute("INSERT INTO transcript_fts (transcript_fts) VALUES ('rebuild')")


TRANSCRIPTS_SCHEMA = Schema(
    store="transcripts",
    tables=frozenset({"transcripts", "transcript_speakers"}),
    migrations=(
        Migration(1, "transcripts, their speakers and the full-text index", (_create,)),
        Migration(2, "full-text index: prefix indexes (SQLite), owner and service tokens in tsv (PostgreSQL)",
                  (_fts_for_search,), additive=True),
    ),
)
