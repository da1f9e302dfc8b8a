"""The Docker deployment (`make images`, `make up`): image sizes, container memory, cold start through the stack.

`python -m bench.bench_images` — in one run, against a real dockerd (scripts/ensure-dockerd.sh):
- `make images` (with whatever layer cache the engine has; the time is printed) and each image's size;
- `make up` in a temp dir (free ports, Nginx with TLS + basic auth, the proxy), then for each service:
  - first ever: the first request after `make up` (empty cache volumes), then the container is stopped;
  - cold: the container is stopped; one request through Nginx and the proxy (faster-whisper: jfk.flac on
    /v1/audio/transcriptions; whisperx: sample.wav on /transcribe with diarize=true) — wake, load, answer;
  - warm: the same request again, BENCH_ROUNDS times (median);
  - memory: the container's cgroup at ready-idle (after the wake, before any transcription) and its peak while the
    requests run (sampled every 50 ms), counted as `docker stats` counts it (usage minus inactive file cache);
  against the memory of the deployment these images replace (figures from the issue: faster-whisper ~400 MB,
  WhisperX ~500 MB, ~800 MB with diarization).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.report import table, vm_hwm_mb, write_section
from tests.containers.deployment import Deployment
from tests.containers.docker_cli import CONTAINERS, PREFIX, SERVICES, docker, engine_answers, image_size_mb, inspect
from tests.support import ROOT, fixture_path

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
REPLACED_MB = {"whisper-faster": "~400", "whisperx": "~500 (~800 with diarization)"}


def process_peak_rss_mb(container: str) -> float:
    """VmHWM of the service process (PID 1, `python -m ...`) in the container: its peak resident memory since it
    started."""
    status = docker("exec", container, "python", "-c", "print(open('/proc/1/status').read())").stdout
    return vm_hwm_mb(status)


def memory_mb(container: str) -> float:
    """What `docker stats` shows: the cgroup's usage minus its inactive file cache (cgroup v1 or v2)."""
    info = inspect(container)
    assert info is not None
    cid = info["Id"]
    v1 = Path("/sys/fs/cgroup/memory/docker") / cid
    if v1.is_dir():
        usage = int((v1 / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (v1 / "memory.stat").read_text().splitlines())
        return (usage - int(stat.get("total_inactive_file", 0))) / 1e6
    for v2 in (Path("/sys/fs/cgroup/system.slice") / f"docker-{cid}.scope", Path("/sys/fs/cgroup/docker") / cid):
        if v2.is_dir():
            usage = int((v2 / "memory.current").read_text())
            stat = dict(line.split() for line in (v2 / "memory.stat").read_text().splitlines())
            return (usage - int(stat.get("inactive_file", 0))) / 1e6
    raise RuntimeError(f"no memory cgroup found for {container}")


class PeakSampler:
    def __init__(self, container: str) -> None:
        self.container, self.peak, self._stop = container, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, memory_mb(self.container))
            except (OSError, RuntimeError, AssertionError):
                pass
            time.sleep(0.05)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def request(deployment: Deployment, service: str) -> float:
    """One transcription through Nginx and the proxy; seconds from sending to the complete answer."""
    with deployment.client() as http:
        started = time.perf_counter()
        if service == "whisper-faster":
            with fixture_path("jfk.flac").open("rb") as audio:
                response = http.post(
                    deployment.url(service, "/v1/audio/transcriptions"),
                    files={"file": ("jfk.flac", audio, "audio/flac")},
                    data={"model": "whisper-1"},
                )
        else:
            with fixture_path("sample.wav").open("rb") as audio:
                response = http.post(
                    deployment.url(service, "/transcribe"),
                    files={"file": ("sample.wav", audio, "audio/wav")},
                    data={"diarize": "true"},
                )
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def wake_for_idle(deployment: Deployment, service: str) -> float:
    """Wake the service with a health request through the stack; returns the seconds it took to be ready."""
    with deployment.client() as http:
        started = time.perf_counter()
        http.get(deployment.url(service, "/health/ready")).raise_for_status()
        return time.perf_counter() - started


def main() -> int:
    if not engine_answers():
        print("no Docker Engine (apt-get install docker.io)", file=sys.stderr)
        return 1
    started = time.monotonic()
    build = subprocess.run(["make", "--no-print-directory", "images"], cwd=ROOT, capture_output=True, text=True)
    if build.returncode != 0:
        print(build.stdout[-3000:] + build.stderr[-3000:], file=sys.stderr)
        return 1
    build_seconds = time.monotonic() - started
    base = (inspect(f"{PREFIX}/whisper-faster:latest") or {})["Config"]["Labels"]["org.opencontainers.image.base.name"]
    torch_line = docker(
        "run", "--rm", "--entrypoint", "python", f"{PREFIX}/whisperx:latest", "-c",
        "import torch; print(torch.__version__, 'CUDA build' if torch.version.cuda else 'CPU build')",
    ).stdout.strip()  # fmt: skip
    sizes = [[f"`{PREFIX}/{s}`", f"{image_size_mb(f'{PREFIX}/{s}:latest') / 1000:.2f} GB"] for s in SERVICES]
    sizes.append([f"`{base}` (base)", f"{image_size_mb(base) / 1000:.2f} GB"])

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        deployment = Deployment(Path(tmp), idle_timeout=3600)
        deployment.write_nginx_conf()
        projects: set[str] = set()
        try:
            up = deployment.make("up")
            if up.returncode != 0:
                print(up.stdout[-3000:] + up.stderr[-3000:], file=sys.stderr)
                return 1
            projects = deployment.projects()
            for service, container in CONTAINERS.items():
                # First ever: fresh volumes (nothing cached yet: numba kernels, hub files), then stopped again.
                first = request(deployment, service)
                docker("stop", container)
                # Cold: stopped container → wake, model load, answer, all through Nginx and the proxy.
                with PeakSampler(container) as cold_peak:
                    cold = request(deployment, service)
                warm = []
                with PeakSampler(container) as warm_peak:
                    for _ in range(ROUNDS):
                        warm.append(request(deployment, service))
                peak_rss = process_peak_rss_mb(container)
                # Ready-idle: a fresh start (no transcription yet), woken by a health request.
                docker("stop", container)
                ready = wake_for_idle(deployment, service)
                time.sleep(2)
                idle = memory_mb(container)
                rows.append(
                    [
                        service,
                        f"{first:.2f} s",
                        f"{cold:.2f} s",
                        f"{statistics.median(warm):.2f} s",
                        f"{cold / statistics.median(warm):.1f}×",
                        f"{ready:.1f} s",
                        f"{idle:.0f} MB",
                        f"{max(cold_peak.peak, warm_peak.peak):.0f} MB",
                        f"{peak_rss:.0f} MB",
                        f"{REPLACED_MB[service]} MB",
                    ]
                )
                docker("stop", container)
        finally:
            deployment.cleanup(projects or {"whisper-faster", "whisperfaster", "whisperx"})

    body = "\n\n".join(
        [
            f"`make images` took {build_seconds:.0f} s in this run (with the engine's layer cache). Base image: "
            f"`{base}`. whisperx got torch {torch_line}.",
            table(["image", "size"], sizes),
            "Requests go through Nginx (TLS, basic auth) and the auto-start proxy to the container; first ever = "
            "the first request after `make up` (empty cache volumes), cold = the "
            "container was stopped (the proxy starts it and waits for /health/ready), warm = the same request "
            f"again (median of {ROUNDS}). faster-whisper: jfk.flac (11 s) on /v1/audio/transcriptions; whisperx: "
            "sample.wav (30 s) on /transcribe with diarize=true; model tiny.en, CPU. Memory as `docker stats` "
            "counts it; ready-idle = after a fresh start, before any transcription; peak = while the requests ran. "
            "Service process peak RSS = VmHWM of the service's process (PID 1) after the cold and warm requests. "
            "Replaced = the deployment these images replace (figures from the issue, not measured here). "
            "whisperx's first request after a wake loads the Whisper model and the embedded diarizer (numpy; PyTorch "
            "is not imported on this path).",
            table(
                [
                    "service",
                    "first request ever",
                    "cold request",
                    "warm request",
                    "cold/warm",
                    "wake to ready",
                    "memory ready-idle",
                    "memory peak",
                    "service process peak RSS",
                    "replaced deployment",
                ],
                rows,
            ),  # fmt: skip
        ]
    )
    write_section("images", "Docker images and containers", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
