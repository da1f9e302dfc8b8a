"""`make test`'s two pytest processes (scripts/run_suite.py): together they select every test once, and the ports each
picks (tests/support.free_port) are its own and no outgoing connection's."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import ROOT, free_port


def run_suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_suite", ROOT / "scripts" / "run_suite.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def collected(*marks: str) -> set[str]:
    """The test ids pytest selects with `-m` (none: all)."""
    selection = ["-m", marks[0]] if marks else []
    listing = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              *selection], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return {line for line in listing.stdout.splitlines() if "::" in line}


def test_the_two_parts_select_every_test_once() -> None:
    parts = run_suite().PARTS
    services, stack = collected(parts["services"]), collected(parts["stack"])
    assert services and stack and not services & stack
    assert services | stack == collected()
    assert all(re.match(r"tests/(containers|platforms/test_fresh_roots)", test) is None for test in services)


def test_the_parts_ports_are_apart_and_below_the_kernels_ephemeral_range() -> None:
    ranges = [tuple(int(port) for port in ports.split("-")) for ports in run_suite().PORTS.values()]
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    (low_a, high_a), (low_b, high_b) = sorted(ranges)
    assert 1024 < low_a <= high_a < low_b <= high_b < first_ephemeral


def test_a_port_comes_from_the_parts_range_and_never_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # Below both parts' ranges, so the other part running at once holds none of them.
    monkeypatch.setenv(run_suite().PORTS_VARIABLE, "19990-19993")
    ports = [free_port() for _ in range(4)]
    assert sorted(ports) == [19990, 19991, 19992, 19993]
    with pytest.raises(RuntimeError, match="no free port in 19990-19993"):
        free_port()
