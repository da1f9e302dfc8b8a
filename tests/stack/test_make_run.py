"""`make run`'s program (scripts/run_local.py) run as a user would: started in the background, the curl and
openai examples it prints are run as printed, then Ctrl-C (SIGINT) must leave nothing behind; a second run reuses
the certificate and the credentials."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.stack.harness import require_nginx
from tests.support import ROOT, free_port

pytestmark = pytest.mark.stack

BANNER_END = "print(client.audio.transcriptions.create("


@dataclass
class Run:
    process: subprocess.Popen
    ports: dict[str, int]
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, marker: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while marker not in self.output:
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the reader thread drain
                if marker in self.output:
                    return
                pytest.fail(f"run_local.py exited with {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"{marker!r} not printed within {timeout_s:.0f}s:\n{self.output}")
            time.sleep(0.1)


@contextmanager
def run_local(run_dir: Path) -> Iterator[Run]:
    ports = {
        name: free_port()
        for name in (
            "RUN_HTTPS_PORT",
            "RUN_HTTP_PORT",
            "RUN_PROXY_PORT",
            "RUN_WHISPER_FASTER_PORT",
            "RUN_WHISPERX_PORT",
        )
    }
    env = {**os.environ, "RUN_DIR": str(run_dir), "PYTHONUNBUFFERED": "1", **{k: str(v) for k, v in ports.items()}}
    env.pop("WHISPER_PASSWORD", None)
    env.pop("WHISPER_USER", None)
    process = subprocess.Popen(
        [sys.executable, "scripts/run_local.py"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    run = Run(process, ports)
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: run.lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def printed_command(output: str, pattern: str) -> str:
    match = re.search(rf"^\s*(curl .*{re.escape(pattern)})$", output, re.MULTILINE)
    assert match, f"no curl example for {pattern} in:\n{output}"
    return match.group(1)


def test_make_run_serves_through_its_printed_examples_and_stops_cleanly(tmp_path: Path) -> None:
    require_nginx()
    run_dir = tmp_path / "run"
    with run_local(run_dir) as run:
        run.wait_for_output(BANNER_END, 60)
        output = run.output
        https = run.ports["RUN_HTTPS_PORT"]
        assert f"https://whisper.localhost:{https}" in output and f"https://whisperx.localhost:{https}" in output
        user, password = (run_dir / "credentials").read_text().strip().split(":", 1)
        assert (run_dir / "credentials").stat().st_mode & 0o777 == 0o600
        assert f"password:     {password}   (generated now" in output

        # The curl example, run exactly as printed: wakes whisper-faster through nginx and the proxy.
        curl = subprocess.run(
            ["bash", "-c", printed_command(output, "/v1/audio/transcriptions")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert curl.returncode == 0, curl.stderr
        assert "country" in curl.stdout.lower(), curl.stdout

        # The whisperx one: woken the same way, two speakers in pyannote's sample conversation.
        curl = subprocess.run(
            ["bash", "-c", printed_command(output, "/transcribe")], capture_output=True, text=True, timeout=600
        )
        assert curl.returncode == 0, curl.stderr
        segments = json.loads(curl.stdout)["segments"]
        assert len({segment["speaker"] for segment in segments if segment.get("speaker")}) == 2, curl.stdout

        # The openai example file it names, run with the interpreter it names.
        example = re.search(r"Or with the openai client: (\S+) (\S+)", output)
        assert example, output
        openai = subprocess.run([example.group(1), example.group(2)], capture_output=True, text=True, timeout=600)
        assert openai.returncode == 0, openai.stderr
        assert "ask not what your country" in openai.stdout.lower() or "country" in openai.stdout.lower()

        started = descendants(run.process.pid)
        assert len(started) >= 4, started  # nginx master + worker, the proxy, the woken service

        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(90) == 0, run.output
    time.sleep(0.5)
    assert "stopped." in run.output
    left = sorted(pid for pid in started if alive(pid))
    assert not left, f"processes left after Ctrl-C: {left}"
    assert all(port_free(port) for port in run.ports.values()), run.ports
    # Both woken services were stopped gracefully (SIGTERM from the proxy), not killed.
    service_output = (run_dir / "logs" / "autostart.log").read_text()
    assert service_output.count("Application shutdown complete.") == 2, service_output[-3000:]

    # Second run: same certificate, same credentials, the password is not shown again.
    cert_before = (run_dir / "tls" / "cert.pem").read_bytes()
    with run_local(run_dir) as again:
        again.wait_for_output(BANNER_END, 60)
        assert (run_dir / "tls" / "cert.pem").read_bytes() == cert_before
        assert (run_dir / "credentials").read_text().strip() == f"{user}:{password}"
        assert password not in again.output
        assert "password:     unchanged" in again.output

        # A third one on the same run directory is refused while the second runs.
        with run_local(run_dir) as third:
            assert third.process.wait(30) == 1
            third.wait_for_output("another `make run`", 5)
        again.process.send_signal(signal.SIGINT)
        assert again.process.wait(60) == 0, again.output
