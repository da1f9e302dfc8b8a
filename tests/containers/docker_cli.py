"""The Docker Engine the container tests drive, through the docker CLI (what `make up` itself uses)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import Any

from tests.support import ROOT

SERVICES = ("whisper-faster", "whisperx", "autostart")
CONTAINERS = {"whisper-faster": "faster-whisper", "whisperx": "whisperx"}
PREFIX = "whisper-platform"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def inspect(name: str) -> dict[str, Any] | None:
    """`docker inspect` of a container or image; None when it does not exist."""
    result = docker("inspect", name, check=False)
    return json.loads(result.stdout)[0] if result.returncode == 0 else None


def running(container: str) -> bool:
    info = inspect(container)
    return bool(info and info["State"]["Running"])


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    started = subprocess.run([str(ROOT / "scripts" / "ensure-dockerd.sh"), "120"], capture_output=True, text=True)
    return started.returncode == 0


def image_size_mb(image: str) -> float:
    return float(docker("image", "inspect", "-f", "{{.Size}}", image).stdout) / 1e6
