"""Schema migrations on a store of 100,000 jobs, SQLite and PostgreSQL: how long the first start after the upgrade
takes (a database of the release before schema versions taken to version 1), every later start (nothing to do), an
older layout without the `queue` column (the column and its unique index added), and what a typical next migration
costs (an additive column with a default and an index over it).

    python -m bench.bench_migrations [--jobs 100000] [--postgres URL] [--compare-yoyo PATH]

Without `--postgres` a throwaway server is started as the tests start one (Debian's binaries, `fsync=off`).
`--compare-yoyo PATH` (a directory where yoyo-migrations 9.0.0 is installed, e.g. `pip install --target PATH
yoyo-migrations==9.0.0`; it is not a dependency) also times a process that starts on an up-to-date SQLite database
with yoyo and with this runner: the figure kept in `whisper_common/db/migrations.py`'s docstring.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from bench.report import table, write_section
from whisper_common.db import Database, Migration, Schema, open_database
from whisper_common.jobs.schema import JOBS_SCHEMA, RELEASE_INDEXES, RELEASE_TABLES

ROOT = Path(__file__).resolve().parent.parent
# A typical next migration (a column with a default and an index over it), numbered after the store's latest: the
# example was jobs.owner until owners made it the real migration 2.
NEXT = Migration(len(JOBS_SCHEMA.migrations) + 1, "jobs.label (example)", (
    "ALTER TABLE jobs ADD COLUMN label TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX IF NOT EXISTS jobs_label ON jobs (queue, label, created_at)",
), additive=True)
NEXT_SCHEMA = Schema(JOBS_SCHEMA.store, JOBS_SCHEMA.tables, (*JOBS_SCHEMA.migrations, NEXT))
RESULT = json.dumps({"language": "en", "duration": 60.0, "segments": [
    {"id": i, "start": i * 6.0, "end": i * 6.0 + 6.0, "text": " A sentence of an hour-long meeting, kept as its result."}
    for i in range(10)]})


def rows(count: int) -> Iterator[tuple]:
    """Jobs as a long-running deployment holds them: most succeeded (with a result), some failed, queued, running."""
    rng = random.Random(7)
    start = time.time() - 7 * 86400
    for number in range(count):
        created = start + number * 6.0
        status = rng.choices(["succeeded", "failed", "queued", "running", "canceled"], [90, 4, 3, 1, 2])[0]
        finished = created + 30 if status in ("succeeded", "failed", "canceled") else None
        yield (f"job_{number:032x}", "whisper_faster", status, created, created + 1, finished, created, 1, 3,
               "host:1:w" if status == "running" else None, created + 60 if status == "running" else None, 0,
               '{"model": "tiny.en"}', "{}", None, None, f"jobs/job_{number:032x}/audio", None, f"{number:064x}",
               60.0, 60.0 if finished else 0.0, '{"message": "x", "code": "y"}' if status == "failed" else None,
               RESULT if status == "succeeded" else None)


COLUMNS = ("id, queue, status, created_at, started_at, finished_at, run_after, attempts, max_attempts, lease_owner, "
           "lease_expires_at, cancel_requested, options, metadata, webhook_url, audio_url, audio_file, idempotency_key, "
           "request_hash, audio_seconds, audio_seconds_done, error, result")


def release_ddl(without_queue: bool) -> list[str]:
    """The tables the release before schema versions made, or (older) a jobs table without `queue`."""
    statements = list(RELEASE_TABLES.values()) + list(RELEASE_INDEXES)
    if without_queue:
        statements[0] = (statements[0].replace("        queue TEXT NOT NULL,\n", "")
                         .replace("UNIQUE (queue, idempotency_key)", "UNIQUE (idempotency_key)"))
        statements = [s for s in statements if "ON jobs (queue" not in s]
    return statements


def fill_sqlite(path: Path, count: int, without_queue: bool) -> None:
    connection = sqlite3.connect(path)
    for statement in release_ddl(without_queue):
        connection.execute(statement)
    columns = COLUMNS.replace("queue, ", "") if without_queue else COLUMNS
    width = columns.count(",") + 1
    data = ((row[:1] + row[2:]) if without_queue else row for row in rows(count))
    connection.executemany(f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * width)})", data)
    connection.commit()
    connection.execute("PRAGMA journal_mode=WAL")
    connection.close()


def fill_postgres(url: str, count: int, without_queue: bool) -> None:
    with psycopg.connect(url) as connection:
        for statement in release_ddl(without_queue):
            connection.execute(statement)
        columns = COLUMNS.replace("queue, ", "") if without_queue else COLUMNS
        with connection.cursor().copy(f"COPY jobs ({columns}) FROM STDIN") as copy:
            for row in rows(count):
                copy.write_row((row[:1] + row[2:]) if without_queue else row)
        connection.execute("ANALYZE")


@contextmanager
def postgres(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    sys.path.insert(0, str(ROOT))
    from tests.jobs.postgres import postgres_server

    with postgres_server() as started:
        yield started


def new_database(server: str) -> str:
    name = f"bench{time.monotonic_ns()}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


def timed_open(target: str | Path, schema: Schema) -> float:
    started = time.perf_counter()
    db: Database = open_database(target, schema, params={"queue": "whisper_faster"})
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def scenarios(make: Callable[[bool], str | Path]) -> list[str]:
    """Times (in s) for: release -> v1, up to date, queue-less -> v1, v1 -> v2 (the example)."""
    release = make(False)
    first = timed_open(release, JOBS_SCHEMA)
    later = statistics.median(timed_open(release, JOBS_SCHEMA) for _ in range(5))
    nxt = timed_open(release, NEXT_SCHEMA)
    older = timed_open(make(True), JOBS_SCHEMA)
    return [f"{first * 1000:.0f} ms", f"{later * 1000:.1f} ms", f"{older * 1000:.0f} ms", f"{nxt * 1000:.0f} ms"]


YOYO_START = """
import sys, time
started = time.perf_counter()
from yoyo import get_backend, read_migrations
backend = get_backend("sqlite:///" + sys.argv[1])
migrations = read_migrations(sys.argv[2])
with backend.lock():
    backend.apply_migrations(backend.to_apply(migrations))
print(time.perf_counter() - started)
"""
OWN_START = """
import sys, time
started = time.perf_counter()
from pathlib import Path
from whisper_common.db import Migration, Schema, open_database
statements = [s for s in Path(sys.argv[2], "0001_jobs.sql").read_text().split(";\\n") if s.strip()]
schema = Schema("jobs", frozenset({"jobs"}), (Migration(1, "jobs", tuple(statements)),))
open_database(Path(sys.argv[1]), schema).close()
print(time.perf_counter() - started)
"""


def compare_yoyo(yoyo_path: Path, directory: Path) -> str:
    migrations = directory / "yoyo-migrations"
    migrations.mkdir()
    (migrations / "0001_jobs.sql").write_text(";\n".join([*RELEASE_TABLES.values(), *RELEASE_INDEXES]) + ";\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(yoyo_path), str(ROOT)])}

    def start(script: str, database: Path, *extra: str) -> float:
        out = subprocess.run([sys.executable, "-c", script, str(database), *extra], env=env, capture_output=True,
                             text=True, check=True).stdout
        return float(out.split()[-1])

    start(YOYO_START, directory / "yoyo.sqlite3", str(migrations))
    start(OWN_START, directory / "own.sqlite3", str(migrations))
    yoyo = statistics.median(start(YOYO_START, directory / "yoyo.sqlite3", str(migrations)) for _ in range(9))
    own = statistics.median(start(OWN_START, directory / "own.sqlite3", str(migrations)) for _ in range(9))
    rows_ = [["yoyo-migrations 9.0.0 (import, its connection, lock row, nothing to apply)", f"{yoyo * 1000:.1f} ms"],
             ["whisper_common.db (import, open, version check, nothing to apply)", f"{own * 1000:.1f} ms"]]
    print(f"yoyo {yoyo * 1000:.1f} ms, whisper_common.db {own * 1000:.1f} ms", file=sys.stderr)
    return table(["a process starting on an up-to-date SQLite database", "median of 9"], rows_)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--postgres", default=None, help="a postgresql:// URL of a server where databases may be made")
    parser.add_argument("--compare-yoyo", type=Path, default=None, help="where yoyo-migrations is installed")
    parser.add_argument("--no-write", action="store_true", help="print, do not update docs/benchmarks.md")
    args = parser.parse_args()
    logging.getLogger("whisper_common.db").setLevel(logging.ERROR)  # the throwaway server's fsync=off warning
    load_before = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-migrations-") as name:
        directory = Path(name)
        counter = iter(range(1_000))

        def sqlite_db(without_queue: bool) -> Path:
            path = directory / f"jobs-{next(counter)}.sqlite3"
            fill_sqlite(path, args.jobs, without_queue)
            return path

        size_mb = 0.0
        sqlite_times = scenarios(sqlite_db)
        size_mb = (directory / "jobs-0.sqlite3").stat().st_size / 2**20
        with postgres(args.postgres) as server:
            with psycopg.connect(server) as connection:
                fsync = connection.execute("SHOW fsync").fetchone()[0]

            def postgres_db(without_queue: bool) -> str:
                url = new_database(server)
                fill_postgres(url, args.jobs, without_queue)
                return url

            postgres_times = scenarios(postgres_db)
        yoyo = compare_yoyo(args.compare_yoyo, directory) if args.compare_yoyo else ""
    latest = f"v{len(JOBS_SCHEMA.migrations)}"
    headers = ["database", f"first start: release before -> {latest}", "every later start (nothing to do)",
               f"older layout without queue -> {latest}", "next migration: column + index (example)"]
    body = "\n".join([
        f"A store of {args.jobs:,} jobs (90 % succeeded with a 1 KB result; SQLite file {size_mb:.0f} MB), opened "
        f"by `open_database` as a service does at start; PostgreSQL with fsync={fsync}. Load average {load_before} "
        f"before, {' / '.join(f'{v:.2f}' for v in os.getloadavg())} after (a shared machine: noisy).",
        "",
        table(headers, [["SQLite", *sqlite_times], ["PostgreSQL", *postgres_times]]),
        "",
        "Migration 1 only records version 1 on a database of the release before (its tables are the schema), "
        "whatever its size; the later ones run after it on the same start (migration 2: owners' column with a default "
        "and an index over it, one index build). The older layout without `queue` gets the column (a constant-time `ALTER TABLE`) and the "
        "three indexes that include it, each built over every row; a typical next migration (a column with a default "
        "and an index over it) costs one index build. Either runs once, by one process, in the one migration "
        "transaction, while the other processes wait for its lock.",
        *(["", yoyo] if yoyo else []),
    ])
    print(body)
    if not args.no_write:
        write_section("migrations", "Schema migrations: a store of 100,000 jobs", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
