"""The cost of a durable submit: what `POST /v1/jobs` writes before its `202`, the release before durable acceptance
against now, alternating in one run on one file system.

- before: the upload written and fsynced, renamed into its job directory, the row committed in WAL mode with
  `synchronous=NORMAL` (a power loss could lose the row, or the audio's new name, after the `202`);
- now: the same, plus the job directory and `jobs/` fsynced (`JobFiles.adopt`) and the row committed with
  `synchronous=FULL` (`SqlStore.insert`: the WAL is synced before COMMIT returns).

The HTTP side of a submit (multipart parsing, validation) is the same in both and left out; `bench_jobs` times a whole
submit. With `--postgres URL` the same insert also runs against PostgreSQL (durable by default, so one figure).

    python -m bench.bench_durable_submit [--rounds 200] [--upload-kb 1024] [--dir PATH] [--postgres URL]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.report import table, write_section
from whisper_common.jobs.files import JobFiles
from whisper_common.jobs.records import JobRow, JobStatus, new_job_id
from whisper_common.jobs.sqlite import SqliteStore
from whisper_common.jobs.store import JOB_COLUMNS, SqlStore


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def file_system(path: Path) -> str:
    found = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True).stdout.split()
    return found[-1] if found else "unknown"


def new_job(queue: str) -> JobRow:
    now = time.time()
    return JobRow(id=new_job_id(), queue=queue, status=JobStatus.QUEUED, created_at=now, run_after=now, max_attempts=3,
                  options=json.dumps({"model": "tiny.en"}), metadata="{}")


def upload(files: JobFiles, data: bytes) -> Path:
    """As the intake writes an upload: a new file in jobs/.incoming, fsynced before the job is made."""
    path = files.incoming / f"upload-{os.urandom(8).hex()}"
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def adopt_before(files: JobFiles, job_id: str, path: Path) -> str:
    """`JobFiles.adopt` of the release before: the rename, without syncing the directories."""
    directory = files.job_dir(job_id)
    directory.mkdir(parents=True, exist_ok=True)
    destination = files.audio_path(job_id)
    path.rename(destination)
    return files.relative(destination)


def insert_before(store: SqlStore, job: JobRow) -> None:
    """`SqlStore.insert` of the release before: the same row, committed with the connection's synchronous=NORMAL."""
    values = job.model_dump()
    marks = ", ".join(f"${number}" for number in range(1, len(JOB_COLUMNS) + 1))
    with store.transaction() as tx:
        tx.execute(f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({marks})", [values[n] for n in JOB_COLUMNS])


def submit_before(store: SqlStore, files: JobFiles, data: bytes) -> None:
    job = new_job(store.queue)
    job.audio_file = adopt_before(files, job.id, upload(files, data))
    insert_before(store, job)


def submit_now(store: SqlStore, files: JobFiles, data: bytes) -> None:
    job = new_job(store.queue)
    job.audio_file = files.adopt(job.id, upload(files, data))
    store.insert(job)


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--upload-kb", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None, help="where DATA_DIR goes (default: the temporary directory)")
    parser.add_argument("--postgres", default=None, help="also time the insert against this postgresql:// URL")
    parser.add_argument("--no-write", action="store_true", help="print, do not update docs/benchmarks.md")
    args = parser.parse_args()
    data = os.urandom(args.upload_kb * 1024)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="durable-submit-", dir=args.dir) as directory:
        root = Path(directory)
        stores = {name: SqliteStore(root / name / "jobs.sqlite3", "whisper_faster") for name in ("before", "now")}
        files = {name: JobFiles(root / name) for name in stores}
        for name in stores:  # warm up: the files exist, the first checkpoint is done
            for _ in range(5):
                (submit_before if name == "before" else submit_now)(stores[name], files[name], data)
        times: dict[str, list[float]] = {"before": [], "now": []}
        for round_ in range(args.rounds):  # alternating, so load from other processes hits both alike
            order = ("before", "now") if round_ % 2 == 0 else ("now", "before")
            for name in order:
                submit = submit_before if name == "before" else submit_now
                times[name].append(timed(lambda: submit(stores[name], files[name], data)))
        for store in stores.values():
            store.close()
        fs = file_system(root)
    median = {name: statistics.median(values) * 1000 for name, values in times.items()}
    p90 = {name: statistics.quantiles(values, n=10)[-1] * 1000 for name, values in times.items()}
    rows = [
        ["before: upload fsynced, row with synchronous=NORMAL", f"{median['before']:.2f} ms", f"{p90['before']:.2f} ms"],
        ["now: + job directory and jobs/ fsynced, row with synchronous=FULL", f"{median['now']:.2f} ms",
         f"{p90['now']:.2f} ms"],
    ]
    if args.postgres:
        from whisper_common.jobs.postgres import PostgresStore

        pg = PostgresStore(args.postgres, "bench_durable_submit")
        pg_times = [timed(lambda: pg.insert(new_job("bench_durable_submit"))) for _ in range(args.rounds)]
        with pg.transaction() as tx:
            tx.execute("DELETE FROM jobs WHERE queue = $1", ("bench_durable_submit",))
            settings = {row["name"]: row["setting"] for row in tx.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')")}
        pg.close()
        rows.append([f"PostgreSQL insert alone (fsync={settings['fsync']}, synchronous_commit="
                     f"{settings['synchronous_commit']})", f"{statistics.median(pg_times) * 1000:.2f} ms",
                     f"{statistics.quantiles(pg_times, n=10)[-1] * 1000:.2f} ms"])
    body = "\n".join([
        f"What a submit writes before its `202` ({args.upload_kb} KiB upload, {args.rounds} submits each, alternating; "
        f"DATA_DIR on {fs}; load average {load_before} before, {load_average()} after):",
        "",
        table(["storage part of one submit", "median", "p90"], rows),
        "",
        f"**Durable acceptance costs {median['now'] / median['before']:.2f}x the storage part of a submit "
        f"(+{median['now'] - median['before']:.2f} ms median)**: two directory fsyncs and the WAL's sync at COMMIT. "
        "The figures follow the disk's flush latency: a shared virtual disk is noisy, a battery-backed or NVMe one "
        "is faster. PostgreSQL commits durably by default (`synchronous_commit=on`); a durable transaction sets it "
        "on for itself, so a server configured with it off still keeps accepted jobs.",
    ])
    print(body)
    if not args.no_write:
        write_section("durable-submit", "Jobs: the cost of a durable submit", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
