"""Child processes of the local stack: started in their own process group, stopped gracefully, then killed."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """A started child: its name (for messages), its process and where its output goes."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, stop_signal: signal.Signals = signal.SIGTERM, grace_s: float = 20.0) -> int | None:
        """Signals the whole group (a child may have children of its own), waits, then kills what is left."""
        if self.alive():
            _signal_group(self.process.pid, stop_signal)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # The leader may be gone while members of its group are not.
        _signal_group(self.process.pid, signal.SIGKILL)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_child(
    name: str, args: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Child:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=cwd,
            # Own process group: Ctrl-C in the terminal reaches only the supervisor, which stops children in order.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return Child(name, process, log_path)


def wait_until(check, timeout_s: float, what: str, child: Child | None = None, interval_s: float = 0.1) -> None:
    """Polls check() until it is true; fails early with the child's log when the child exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}")
        if check():
            return
        time.sleep(interval_s)
    tail = f"\n{child.log_tail()}" if child is not None else ""
    raise TimeoutError(f"{what} not ready within {timeout_s:.0f}s{tail}")


def _die_with_parent() -> None:
    """If the supervisor is killed outright (SIGKILL), its children get SIGTERM instead of living on."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
