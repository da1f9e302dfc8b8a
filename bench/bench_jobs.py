"""Jobs against synchronous requests on one whisper-faster (embedded tiny.en, one inference slot, one job worker):

- submit-to-202 for a 100 MB upload (the job is stored, not run), against the same upload to a bare Starlette route
  that parses the form the usual way (`await request.form()`, spooled to a temporary file) and answers 200;
- throughput of 20 short jobs (submitted at once, polled to the end) against the same 20 clips sent synchronously
  one after another;
- the overhead of one job (submit, poll every 20 ms, fetch the result) over one synchronous request on jfk.flac.

    python -m bench.bench_jobs [--repeat 5]

Job and synchronous runs alternate so that load from other processes hits both alike; each figure is a median.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.report import table, write_section
from tests.service_servers import start_service
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "audio"
SHORT_CLIPS = ("jfk.flac", "hotwords.mp3", "stereo_diarization.wav", "hotwords.mp3")
UPLOAD_MB = 100
SINK_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def sink(request):
    form = await request.form(max_part_size=2**31)
    size = len(await form["file"].read())
    await form.close()
    return JSONResponse({"bytes": size})

app = Starlette(routes=[Route("/upload", sink, methods=["POST"])])
"""


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def big_wav(destination: Path) -> Path:
    """About UPLOAD_MB of real 16 kHz mono speech (dev00.wav looped)."""
    seconds = UPLOAD_MB * 10**6 / 32_000
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(FIXTURES / "dev00.wav"), "-t", f"{seconds:.0f}",
         "-ac", "1", "-ar", "16000", str(destination)],
        check=True,
    )
    return destination


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/upload", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answers on port {port}")


def wait_done(client: httpx.Client, job_id: str, poll: float = 0.02) -> dict:
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(poll)


def submit(client: httpx.Client, path: Path) -> str:
    with open(path, "rb") as handle:
        response = client.post("/v1/jobs", files={"file": (path.name, handle)})
    response.raise_for_status()
    return str(response.json()["id"])


def sync(client: httpx.Client, path: Path) -> str:
    response = client.post("/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())})
    response.raise_for_status()
    return str(response.json()["text"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median reported)")
    args = parser.parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as scratch:
        scratch_dir = Path(scratch)
        data_dir = scratch_dir / "data"
        upload = big_wav(scratch_dir / "upload.wav")
        size_mb = upload.stat().st_size / 10**6
        env = {"DATA_DIR": str(data_dir), "MAX_CONCURRENCY": "1", "JOBS_WORKERS": "1", "LOG_LEVEL": "warning",
               "HF_HUB_OFFLINE": "0"}
        (scratch_dir / "bench_sink.py").write_text(SINK_APP)
        sink_port = free_port()
        sink = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench_sink:app", "--port", str(sink_port), "--log-level", "warning"],
            cwd=scratch_dir,
        )
        with (
            start_service("whisper_faster", "bench-jobs", env) as server,
            server.client(timeout=600) as client,
            httpx.Client(base_url=f"http://127.0.0.1:{sink_port}", timeout=600) as sink_client,
        ):
            wait_for_port(sink_port)
            # 1. submit-to-202 for a big upload (deleted at once, so no worker spends the run on it)
            accept_times, copy_times = [], []
            for _ in range(args.repeat):
                started = time.perf_counter()
                job_id = submit(client, upload)
                accept_times.append(time.perf_counter() - started)
                client.delete(f"/v1/jobs/{job_id}")
                wait_done(client, job_id, poll=0.1)
                client.delete(f"/v1/jobs/{job_id}")
                started = time.perf_counter()
                with open(upload, "rb") as handle:
                    sink_client.post("/upload", files={"file": (upload.name, handle)}).raise_for_status()
                copy_times.append(time.perf_counter() - started)
            accept, copy = statistics.median(accept_times), statistics.median(copy_times)

            # 2. throughput: 20 short clips as jobs against the same 20 sent synchronously, one after another
            clips = [FIXTURES / SHORT_CLIPS[i % len(SHORT_CLIPS)] for i in range(20)]
            sync(client, clips[0])  # warm-up
            batch_jobs, batch_sync = [], []
            for _ in range(max(1, args.repeat // 2)):
                started = time.perf_counter()
                ids = [submit(client, clip) for clip in clips]
                statuses = [wait_done(client, job_id, poll=0.05)["status"] for job_id in ids]
                batch_jobs.append(time.perf_counter() - started)
                assert statuses == ["succeeded"] * len(ids), statuses
                started = time.perf_counter()
                for clip in clips:
                    sync(client, clip)
                batch_sync.append(time.perf_counter() - started)
            jobs_batch, sync_batch = statistics.median(batch_jobs), statistics.median(batch_sync)

            # 3. one job against one synchronous request on jfk.flac
            jfk = FIXTURES / "jfk.flac"
            job_times, request_times = [], []
            for _ in range(args.repeat):
                started = time.perf_counter()
                job_id = submit(client, jfk)
                wait_done(client, job_id)
                client.get(f"/v1/jobs/{job_id}/result").raise_for_status()
                job_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                sync(client, jfk)
                request_times.append(time.perf_counter() - started)
            one_job, one_request = statistics.median(job_times), statistics.median(request_times)
        sink.terminate()
        sink.wait(10)
    load_after = load_average()

    rows = [
        [f"submit-to-202, {size_mb:.0f} MB upload", f"{accept:.3f} s", f"bare Starlette form upload: {copy:.3f} s",
         f"**{accept / copy:.2f}**"],
        ["20 short clips, wall time", f"{jobs_batch:.2f} s as jobs", f"{sync_batch:.2f} s synchronous, one by one",
         f"**{jobs_batch / sync_batch:.2f}**"],
        ["jfk.flac (11 s), one request", f"{one_job:.3f} s as a job (submit, poll 20 ms, result)",
         f"{one_request:.3f} s synchronous", f"**{one_job / one_request:.2f}** (+{one_job - one_request:.3f} s)"],
    ]
    body = (
        "One whisper-faster process, embedded tiny.en on CPU, MAX_CONCURRENCY=1 and JOBS_WORKERS=1 (jobs and "
        f"requests run one at a time, so the comparison is the path, not parallelism), SQLite store. Medians of "
        f"{args.repeat} runs (the 20-clip batch: {max(1, args.repeat // 2)}), job and synchronous runs alternating. "
        "The 202 answers once the upload is on disk (fsync'd) and the job row is committed; the baseline is "
        "same upload to a bare Starlette route (uvicorn, `await request.form()`, body spooled to a temporary file). "
        "Clips of the batch: "
        f"{', '.join(SHORT_CLIPS)} in turn.\n\n"
        + table(["figure", "jobs", "baseline", "ratio jobs/baseline"], rows)
        + f"\n\nThe machine was shared with other engineers' test runs (load average {load_before} before, "
        f"{load_after} after), so absolute times are noisy; the ratios compare runs interleaved in time.\n"
    )
    write_section("jobs", "Jobs: submit-to-202, queue throughput and per-job overhead", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
