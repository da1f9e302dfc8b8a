"""Helpers every test package shares: fixture paths, free ports, real server processes."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "audio"
ARTIFACTS = ROOT / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


T = TypeVar("T")


def fixture_path(name: str) -> Path:
    """A file from ../shared/fixtures/audio; a missing one fails the test with its path."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"audio fixture missing: {path} (see ../shared/fixtures/audio/README.md)")
    return path


def require(available: bool, what: str) -> None:
    """Skip when a real dependency is missing locally; under CI a missing dependency is a failure."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"required dependency missing under CI: {what}")
    pytest.skip(f"dependency missing: {what}")


PORTS_VARIABLE = "TEST_PORTS"
"""`first-last`: the ports free_port() picks from. scripts/run_suite.py gives each of the two pytest processes it runs
at once its own range, below the kernel's ephemeral range (32768-60999 by default), so neither picks a port the other
picked and no outgoing connection holds one. Unset: the kernel's choice."""
_handed_out: set[int] = set()


def _port_range() -> tuple[int, int] | None:
    value = os.environ.get(PORTS_VARIABLE, "")
    if not value:
        return None
    first, last = (int(part) for part in value.split("-"))
    return first, last


def free_port() -> int:
    """A port nothing listens on now and that this process has not handed out before: a port handed out is in use or
    about to be, and the kernel's own choice can repeat (it once gave a test's proxy the port of a service the proxy
    was to start, which then could not listen)."""
    ports = _port_range()
    for _ in range(1000):
        wanted = random.randint(*ports) if ports else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", wanted))
            except OSError:  # taken (or closing): try another
                continue
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    where = os.environ.get(PORTS_VARIABLE) or "the kernel's range"
    raise RuntimeError(f"no free port in {where} after 1000 tries")


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen | None = None, **kwargs) -> None:
    """Poll `url` until it answers 2xx; fail early if `proc` dies."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            response = httpx.get(url, timeout=2.0, **kwargs)
            if response.is_success:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 2xx within {timeout:.0f}s ({last})")


@contextmanager
def server_process(
    args: Sequence[str],
    *,
    health_url: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    log_name: str = "server",
    cwd: Path = ROOT,
) -> Iterator[subprocess.Popen]:
    """Run a real server process, wait for its health URL, stop it (SIGTERM, then SIGKILL) after.

    Its output goes to test-artifacts/<log_name>.log so a failure can be read after the run.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"{log_name}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(args), env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            try:
                wait_for_http(health_url, timeout, proc)
            except Exception as exc:
                raise RuntimeError(f"{exc}; log: {log_path}\n{_tail(log_path)}") from exc
            yield proc
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process's group (it was started with start_new_session), SIGKILL past `grace`; returns
    once no member of the group still runs, so no helper it forked is left writing files or holding ports."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # nothing left in the group
        if _group_ended(proc, grace):
            break
    proc.wait()


def _group_ended(proc: subprocess.Popen, timeout: float) -> bool:
    """Waits up to `timeout` until no process of `proc`'s group runs (zombies, which hold nothing, don't count)."""
    deadline = time.monotonic() + timeout
    while True:
        proc.poll()  # reaps the leader; the others are reaped by init
        if not _group_running(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _group_running(group: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


LOST_HANDSHAKE = "timed out while waiting for handshake response"


def retry_lost_tls_handshake(open_connection: Callable[[], T], attempts: int = 3) -> T:
    """`open_connection()` (a `websockets.sync` or `openai` Realtime connect over TLS), tried again, up to `attempts`
    times in all, when only its handshake's answer never came (websockets' TimeoutError "timed out while waiting for
    handshake response"); any other outcome, an HTTP refusal included, is returned or raised at once.

    Why a test may retry: the loss is in the client, not in the platform. websockets' sync client reads its socket in
    a thread while the caller's thread writes the upgrade request; CPython's SSLSocket does not serialise the two, and
    when the reader is handling TLS 1.3's post-handshake session ticket the request can stay unsent until the socket is
    closed. Measured against the `make run` stack's Nginx (2026-12-06, CPython 3.11.7, OpenSSL 3.0.19): one thread that
    writes then reads, 0 lost of 3,500 handshakes; a reader thread started before the write, 5 lost of 12 over TLS 1.3
    and 0 of 60 over TLS 1.2; websockets' own connect, 4 of about 1,200. The loss looked up in Nginx's log was logged
    only when the client gave up and closed, with a request time of 4 ms: it was answered as soon as it arrived."""
    for _ in range(attempts - 1):
        try:
            return open_connection()
        except TimeoutError as exc:
            if LOST_HANDSHAKE not in str(exc):
                raise
    return open_connection()
