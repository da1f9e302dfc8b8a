"""`make test`'s pytest run: the suite as two pytest processes at once, so that it fits its time on two cores.

    python scripts/run_suite.py [pytest arguments...]     # both parts get the arguments

- `stack`: the tests marked `stack` or `docker` (image builds, `make up` and its drills, fresh Debian roots, Nginx and
  the browser): mostly waiting on dockerd, apt, pip and containers, one after another, as they share the Docker
  Engine and the stack's ports.
- `services`: everything else (the services, the proxy, the stores, the models), mostly CPU.

Measured on a 2-core machine (AMD EPYC) from a clean Docker Engine (no image, no build cache): one pytest process
took 2,213 s (load average 1.1-1.5: a core idle about a third of the time); the two parts at once 1,201-1,311 s over
three runs from fresh clones (services 1,108-1,237 s, stack 1,198-1,308 s; `.ci/run` in all 22-25 min). Each part
picks its ports from its own range (`TEST_PORTS`, tests/support.free_port), so the two never pick the same one.

The `services` part streams its output as it runs; the `stack` part's goes to test-artifacts/pytest-stack.log and is
printed, then followed, once the `services` part is done. The exit status is the first failing part's (a part that
selected no test counts as passed).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STACK_LOG = ROOT / "test-artifacts" / "pytest-stack.log"
STACK = "stack or docker"
PARTS = {"services": f"not ({STACK})", "stack": STACK}
"""Marker expressions of the two parts (together: every test once)."""
PORTS_VARIABLE = "TEST_PORTS"  # read by tests/support.free_port
PORTS = {"services": "20000-26383", "stack": "26384-32767"}
"""Each part's ports (below the kernel's ephemeral range, 32768-60999 by default)."""
NO_TESTS = 5  # pytest's exit status when a part selects nothing


def pytest(part: str, arguments: list[str]) -> dict[str, Any]:
    """subprocess arguments of one part's pytest."""
    return {"args": [sys.executable, "-m", "pytest", "-m", PARTS[part], *arguments], "cwd": ROOT,
            "env": {**os.environ, PORTS_VARIABLE: PORTS[part]}}


def follow(log: Path, process: subprocess.Popen[bytes]) -> None:
    """Copy `log` to stdout from its start until `process` has exited and everything it wrote is copied."""
    with log.open("rb") as source:
        while True:
            exited = process.poll() is not None
            chunk = source.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif exited:
                return
            else:
                time.sleep(1)


def main(arguments: list[str]) -> int:
    STACK_LOG.parent.mkdir(exist_ok=True)
    started = time.monotonic()
    with STACK_LOG.open("wb") as log:
        stack = subprocess.Popen(**pytest("stack", arguments), stdout=log, stderr=subprocess.STDOUT)
    try:
        services = subprocess.run(**pytest("services", arguments)).returncode
        print(f"\n== the services part is done ({time.monotonic() - started:.0f} s); the stack part "
              f"({STACK_LOG.relative_to(ROOT)}) follows", flush=True)
        follow(STACK_LOG, stack)
    finally:
        if stack.poll() is None:  # interrupted: stop the other part as Ctrl-C would (its fixtures tear down)
            stack.send_signal(signal.SIGINT)
            try:
                stack.wait(120)
            except subprocess.TimeoutExpired:
                stack.kill()
    print(f"\n== both parts done in {time.monotonic() - started:.0f} s: services exit {services}, "
          f"stack exit {stack.returncode}", flush=True)
    for status in (services, stack.returncode):
        if status not in (0, NO_TESTS):
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
