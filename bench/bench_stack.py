"""The whole stack as `make run` builds it (Nginx TLS + basic auth → auto-start proxy → whisper-faster):

`python -m bench.bench_stack` — in one run:
- requests/s and p50/p99 latency of `GET /health` (wrk, keep-alive): straight to the service (baseline), through
  the proxy, and through Nginx over HTTPS with basic auth, once with the SHA-512-crypt hash `make run` writes and
  once with an APR1-MD5 hash (nginx checks the hash on every request: the hash scheme is the edge's main cost);
- a transcription of jfk.flac through the whole stack while the service is stopped (cold: the proxy wakes it)
  and right after (warm), a few rounds; the difference is what a sleeping service costs the first caller.
"""

from __future__ import annotations

import base64
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.report import table, write_section
from scripts.stack.local_stack import LocalStack
from scripts.stack.settings import RunSettings
from tests.support import FIXTURES, free_port

CONNECTIONS = 8
DURATION = int(os.environ.get("BENCH_DURATION", "8"))
WAKE_ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def settings(run_dir: Path, idle_timeout: float) -> RunSettings:
    return RunSettings(
        dir=run_dir,
        https_port=free_port(),
        http_port=free_port(),
        proxy_port=free_port(),
        whisper_faster_port=free_port(),
        whisperx_port=free_port(),
        idle_timeout=idle_timeout,
    )


def wrk(url: str, headers: dict[str, str]) -> tuple[float, float, float]:
    """requests/s, p50 ms, p99 ms."""
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    output = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def percentile(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()  # type: ignore[union-attr]
        return float(value) * UNITS[unit]

    return rate, percentile("50"), percentile("99")


def auth_header(stack: LocalStack) -> str:
    assert stack.credentials is not None
    token = base64.b64encode(f"{stack.credentials.user}:{stack.credentials.password}".encode()).decode()
    return f"Basic {token}"


def use_apr1_hash(stack: LocalStack) -> None:
    assert stack.credentials is not None
    hashed = subprocess.run(
        ["openssl", "passwd", "-apr1", "-stdin"], input=stack.credentials.password + "\n",
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    stack.paths.htpasswd.write_text(f"{stack.credentials.user}:{hashed}\n")  # read by nginx on each request


def transcribe(stack: LocalStack, client: httpx.Client) -> float:
    started = time.perf_counter()
    with (FIXTURES / "jfk.flac").open("rb") as audio:
        response = client.post(
            f"https://127.0.0.1:{stack.settings.https_port}/v1/audio/transcriptions",
            headers={"Host": stack.settings.whisper_host, "Authorization": auth_header(stack)},
            files={"file": ("jfk.flac", audio)},
            data={"model": "whisper-1"},
        )
    response.raise_for_status()
    assert "country" in response.json()["text"]
    return time.perf_counter() - started


def state(stack: LocalStack) -> str:
    status = httpx.get(f"http://127.0.0.1:{stack.settings.proxy_port}/_autostart/status", timeout=5).json()
    return str(status["services"][stack.settings.whisper_host]["state"])


def throughput(base: Path) -> list[list[object]]:
    stack = LocalStack(settings(base / "throughput", idle_timeout=900))
    stack.prepare()
    try:
        stack.start()
        host = {"Host": stack.settings.whisper_host}
        with httpx.Client(verify=ssl.create_default_context(cafile=str(stack.paths.cert)), timeout=600) as client:
            transcribe(stack, client)  # wakes the service
        https = f"https://127.0.0.1:{stack.settings.https_port}/health"
        cases = [
            ("service directly (baseline)", f"http://127.0.0.1:{stack.settings.whisper_faster_port}/health", {}),
            ("auto-start proxy", f"http://127.0.0.1:{stack.settings.proxy_port}/health", host),
            ("Nginx HTTPS + basic auth (SHA-512-crypt, as `make run` writes)", https,
             {**host, "Authorization": auth_header(stack)}),
        ]  # fmt: skip
        results = [(name, *wrk(url, headers)) for name, url, headers in cases]
        use_apr1_hash(stack)
        results.append(
            ("Nginx HTTPS + basic auth (APR1-MD5)", *wrk(https, {**host, "Authorization": auth_header(stack)}))
        )
    finally:
        stack.stop()
    baseline = results[0][1]
    return [
        [name, f"{rate:.0f}", f"{rate / baseline:.2f}", f"{p50:.2f}", f"{p99:.2f}"] for name, rate, p50, p99 in results
    ]


def wake(base: Path) -> list[list[object]]:
    stack = LocalStack(settings(base / "wake", idle_timeout=2))
    stack.prepare()
    cold, warm = [], []
    try:
        stack.start()
        with httpx.Client(verify=ssl.create_default_context(cafile=str(stack.paths.cert)), timeout=600) as client:
            for _ in range(WAKE_ROUNDS):
                deadline = time.monotonic() + 120
                while state(stack) != "stopped":
                    if time.monotonic() > deadline:
                        raise TimeoutError("the service did not go back to sleep")
                    time.sleep(0.5)
                cold.append(transcribe(stack, client))
                warm.append(transcribe(stack, client))
    finally:
        stack.stop()
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    return [
        ["cold (service stopped, woken by the request)", f"{cold_s:.2f}", " / ".join(f"{v:.2f}" for v in cold)],
        ["warm (right after)", f"{warm_s:.2f}", " / ".join(f"{v:.2f}" for v in warm)],
        ["what sleeping costs the first caller", f"{cold_s - warm_s:.2f}", ""],
    ]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        base = Path(tmp)
        edge = throughput(base)
        cold_warm = wake(base)
    body = (
        f"`GET /health` of whisper-faster, wrk, {CONNECTIONS} keep-alive connections, {DURATION} s each, "
        "2 threads, all on this machine (the load generator shares the CPUs with what it measures).\n\n"
        + table(["path", "requests/s", "ratio to direct", "p50 ms", "p99 ms"], edge)
        + f"\n\nTranscription of jfk.flac (11 s) through Nginx → proxy → whisper-faster (tiny.en, CPU), "
        f"median of {WAKE_ROUNDS} rounds; the proxy's idle timeout is 2 s so the service sleeps between rounds.\n\n"
        + table(["request", "median s", "each round s"], cold_warm)
        + "\n\nThe machine was shared with other engineers' test runs while this ran; compare the ratios, not the "
        "absolute figures."
    )
    write_section("stack", "Whole stack: the Nginx edge and cold starts", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
