"""The per-request cost of owners (who is calling, its usage and quotas), in one run:

1. in process: the three owner middlewares (`auth.OwnerMiddleware`, `usage.UsageMiddleware`,
   `quotas.QuotaMiddleware`) around an ASGI app that answers at once, against that app alone; for no authentication,
   an API key among 1, 100 and 1,000 keys, and an edge user. Medians of batches of calls;
2. the store's query with the owner's filter against the same query without it (SQLite, 20,000 jobs);
3. the service overhead benchmark of bench/bench_whisper_faster.py (a transcription over HTTP against
   faster-whisper called directly), with two services: one without authentication and one checking a key among
   100; the three paths alternate, so load from other processes hits them alike.

    python -m bench.bench_owners [--repeat 5] [--calls 20000] [--write]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from bench.bench_whisper_faster import FIXTURES, free_port, load_average, start_service
from bench.report import table, write_section
from whisper_common.auth import OwnerMiddleware, OwnerResolver
from whisper_common.jobs.records import JobRow, JobStatus, new_job_id
from whisper_common.jobs.sqlite import SqliteStore
from whisper_common.keys import KeyRing
from whisper_common.keys.file import KeyEntry, hash_key, new_key, write_keys
from whisper_common.owners import ANONYMOUS, Owner
from whisper_common.quotas import QuotaGuard, QuotaMiddleware
from whisper_common.settings import QuotaSettings
from whisper_common.usage.ledger import UsageLedger
from whisper_common.usage.meter import UsageMiddleware


async def _answer(scope: dict, receive: object, send) -> None:  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


BATCHES = 200


def owner_stack(resolver: OwnerResolver):  # type: ignore[no-untyped-def]
    ledger = UsageLedger("bench", CollectorRegistry(), namespace="bench")
    guard = QuotaGuard(QuotaSettings(max_concurrent_requests=4), ledger)
    app = QuotaMiddleware(_answer, guard, {"/v1/audio/transcriptions"})
    return OwnerMiddleware(UsageMiddleware(app, ledger), resolver)


def per_call_us(app, headers: list[tuple[bytes, bytes]], calls: int, path: str = "/v1/jobs") -> float:  # type: ignore[no-untyped-def]
    """µs per call: the least of BATCHES short batches of `calls` (a short batch often runs without being
    preempted; on a shared machine any longer figure measures the neighbours as much as the code)."""

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(_: dict) -> None:
        return None

    async def batches() -> float:
        best = float("inf")
        for _ in range(BATCHES):
            started = time.perf_counter()
            for _ in range(calls):
                scope = {"type": "http", "method": "POST", "path": path, "headers": headers,
                         "client": ("127.0.0.1", 1)}
                await app(scope, receive, send)
            best = min(best, (time.perf_counter() - started) / calls * 1e6)
        return best

    return asyncio.run(batches())


def middleware_rows(calls: int, workdir: Path) -> list[list[object]]:
    rows: list[list[object]] = []
    bare = per_call_us(_answer, [], calls)
    rows.append(["the app alone (no owner middlewares)", f"{bare:.2f}", "", ""])
    cases: list[tuple[str, OwnerResolver, list[tuple[bytes, bytes]]]] = [
        ("no authentication (anonymous)", OwnerResolver.build(KeyRing()), []),
    ]
    for count in (1, 100, 1000):
        path, key = keys_file(workdir / f"keys-{count}.json", count)
        cases.append((f"an API key among {count}", OwnerResolver.build(KeyRing(path=path)),
                      [(b"authorization", f"Bearer {key}".encode())]))
    cases.append(("an edge user from a trusted proxy", OwnerResolver.build(KeyRing(), ["127.0.0.1/32"]),
                  [(b"x-whisper-user", b"alice")]))
    for label, resolver, headers in cases:
        cost = per_call_us(owner_stack(resolver), headers, calls)
        metered = per_call_us(owner_stack(resolver), headers, calls, path="/v1/audio/transcriptions")
        rows.append([label, f"{cost:.2f}", f"+{cost - bare:.2f}", f"+{metered - bare:.2f}"])
        print(rows[-1], flush=True)
    return rows


def keys_file(path: Path, count: int) -> tuple[Path, str]:
    """A keys file of `count` keys, written at once; returns it and its last key."""
    entries = []
    key = ""
    for index in range(count):
        key = new_key()
        entries.append(KeyEntry(id=f"key_{index:08x}", name=f"owner-{index}", sha256=hash_key(key)))
    write_keys(path, entries)
    return path, key


def store_rows(workdir: Path, jobs: int = 20_000, reads: int = 2_000) -> list[list[object]]:
    store = SqliteStore(workdir / "jobs.sqlite3", "bench")
    now = time.time()
    ids = []
    with store.transaction() as tx:
        for index in range(jobs):
            job = JobRow(id=new_job_id(), queue="bench", owner=f"owner-{index % 50}", status=JobStatus.SUCCEEDED,
                         created_at=now + index, run_after=now, max_attempts=1)
            values = job.model_dump()
            columns = ", ".join(values)
            marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
            tx.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", list(values.values()))
            ids.append((job.id, job.owner))
    sample = ids[:: max(1, jobs // reads)][:reads]

    def timed(read) -> float:  # type: ignore[no-untyped-def]
        runs = []
        for _ in range(15):
            started = time.perf_counter()
            for job_id, owner in sample:
                read(job_id, owner)
            runs.append((time.perf_counter() - started) / len(sample) * 1e6)
        return min(runs)

    unscoped = timed(lambda job_id, owner: store.peek(job_id))
    scoped = timed(lambda job_id, owner: store.get(job_id, Owner(owner)))
    admin = timed(lambda job_id, owner: store.get(job_id, ANONYMOUS))
    listing = timed(lambda job_id, owner: store.list(Owner(owner), None, 20, None))
    store.close()
    return [
        ["a job by id, no owner filter (the worker's `peek`)", f"{unscoped:.1f}"],
        ["a job by id, the owner's filter (`get`, a user)", f"{scoped:.1f}"],
        ["a job by id, an admin (`get`, no filter)", f"{admin:.1f}"],
        ["a page of 20 of one owner's 400 jobs (`list`)", f"{listing:.1f}"],
    ]


def overhead_rows(repeat: int, workdir: Path) -> tuple[list[list[object]], str, str]:
    from faster_whisper import WhisperModel

    from whisper_common.model_catalog import embedded_model_dir
    from whisper_faster.options import FasterOptions

    threads = os.cpu_count() or 1
    kwargs = FasterOptions().transcribe_kwargs()
    model = WhisperModel(str(embedded_model_dir()), device="cpu", compute_type="int8", cpu_threads=threads)
    service_keys, key = keys_file(workdir / "service-keys.json", 100)
    load_before = load_average()
    open_port, keyed_port = free_port(), free_port()
    open_service = start_service(open_port, threads)
    os.environ["API_KEYS_FILE"] = str(service_keys)
    try:
        keyed_service = start_service(keyed_port, threads)
    finally:
        del os.environ["API_KEYS_FILE"]
    rows = []
    try:
        with (httpx.Client(base_url=f"http://127.0.0.1:{open_port}", timeout=600) as open_client,
              httpx.Client(base_url=f"http://127.0.0.1:{keyed_port}", timeout=600,
                           headers={"Authorization": f"Bearer {key}"}) as keyed_client):

            def direct(path: Path) -> None:
                segments, _ = model.transcribe(str(path), **kwargs)
                list(segments)

            def via(client: httpx.Client):  # type: ignore[no-untyped-def]
                def run(path: Path) -> None:
                    client.post("/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())},
                                data={"model": "tiny.en"}).raise_for_status()
                return run

            def small(client: httpx.Client):  # type: ignore[no-untyped-def]
                def run(_: Path) -> None:
                    client.get("/v1/models").raise_for_status()
                return run

            for name in ("jfk.flac", "sample.wav"):
                path = FIXTURES / name
                paths = {"direct": direct, "open": via(open_client), "keyed": via(keyed_client)}
                for run in paths.values():
                    run(path)  # warm-up
                times: dict[str, list[float]] = {label: [] for label in paths}
                for _ in range(repeat):
                    for label, run in paths.items():
                        started = time.perf_counter()
                        run(path)
                        times[label].append(time.perf_counter() - started)
                medians = {label: statistics.median(values) for label, values in times.items()}
                rows.append([
                    f"POST /v1/audio/transcriptions, {name}", f"{medians['direct']:.3f}", f"{medians['open']:.3f}",
                    f"{medians['keyed']:.3f}", f"{medians['open'] / medians['direct']:.3f}",
                    f"{medians['keyed'] / medians['direct']:.3f}",
                    f"{(medians['keyed'] - medians['open']) * 1000:+.1f} ms",
                ])
                print(rows[-1], flush=True)
            cheap = {"open": small(open_client), "keyed": small(keyed_client)}
            samples: dict[str, list[float]] = {label: [] for label in cheap}
            for _ in range(300):
                for label, run in cheap.items():
                    started = time.perf_counter()
                    run(FIXTURES)
                    samples[label].append(time.perf_counter() - started)
            medians = {label: statistics.median(values) * 1000 for label, values in samples.items()}
            rows.append(["GET /v1/models (300 each)", "", f"{medians['open']:.2f} ms", f"{medians['keyed']:.2f} ms",
                         "", "", f"{medians['keyed'] - medians['open']:+.2f} ms"])
            print(rows[-1], flush=True)
    finally:
        for service in (open_service, keyed_service):
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(30)
    return rows, load_before, load_average()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed transcriptions per file and path")
    parser.add_argument("--calls", type=int, default=500, help="in-process calls per batch (200 batches)")
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    parser.add_argument("--in-process-only", action="store_true", help="skip the two services (parts 1 and 2 only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-owners-") as directory:
        workdir = Path(directory)
        middleware = middleware_rows(args.calls, workdir)
        queries = store_rows(workdir)
        for row in queries:
            print(row, flush=True)
        if args.in_process_only:
            overhead, load_before, load_after = [], load_average(), load_average()
        else:
            overhead, load_before, load_after = overhead_rows(args.repeat, workdir)
    body = (
        "**The owner middlewares, in process** (µs per request; the least of 200 batches of "
        f"{args.calls:,} calls; `+` is the cost over the app alone; a POST to a transcription route also holds the "
        "owner's quota):\n\n"
        + table(["caller", "µs per request", "owners' cost", "on a transcription route"], middleware)
        + "\n\n**The store's queries** (SQLite, 20,000 jobs of 50 owners; µs per query, the least of 15 rounds):\n\n"
        + table(["query", "µs"], queries)
        + "\n\n**The service overhead benchmark with and without a key** (bench/bench_whisper_faster.py's measurement: "
        "embedded tiny.en, CPU int8; two services, one without authentication and one checking a key among 100; "
        f"median of {args.repeat} runs per path, the paths alternating):\n\n"
        + table(["request", "direct s", "HTTP s, open", "HTTP s, key", "ratio open", "ratio key", "key - open"],
                overhead)
        + f"\n\nLoad average {load_before} before, {load_after} after: the machine was shared, so the HTTP "
        "figures move by more than the owners' cost from run to run.\n"
    )
    print(body)
    if args.write:
        write_section("owners", "Owners: the per-request cost of the ownership check", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
