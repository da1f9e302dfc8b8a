"""A real Docker Engine (scripts/ensure-dockerd.sh) and the real images, built once per session with `make images`."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

import pytest

from tests.containers.docker_cli import PREFIX, SERVICES, engine_answers, inspect
from tests.support import ROOT, require


@dataclass(frozen=True)
class BuiltImages:
    commit: str
    base: str
    seconds: float
    log: str


@pytest.fixture(scope="session")
def docker_engine() -> None:
    require(engine_answers(), "a Docker Engine (apt-get install docker.io; scripts/ensure-dockerd.sh starts it)")


@pytest.fixture(scope="session")
def built_images(docker_engine: None) -> BuiltImages:
    """`make images`, the real one: from nothing on a clean machine, from the layer cache afterwards."""
    started = time.monotonic()
    result = subprocess.run(["make", "images"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    labels = (inspect(f"{PREFIX}/whisper-faster:latest") or {})["Config"]["Labels"]
    for service in SERVICES:
        assert inspect(f"{PREFIX}/{service}:latest") is not None, f"{service} image missing after make images"
    return BuiltImages(
        commit=labels["org.opencontainers.image.revision"],
        base=labels["org.opencontainers.image.base.name"],
        seconds=seconds,
        log=log,
    )
