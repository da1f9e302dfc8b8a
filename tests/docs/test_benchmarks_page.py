"""docs/benchmarks.md gives each section's command as typed from the project's root: a reader runs it from their
clone, and a path of the machine that measured it means nothing there (one section said
`python /<that machine's clone>/bench/bench_stack.py`)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_command_on_the_page_runs_from_the_root() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    commands = re.findall(r"^- Command: `([^`]*)`", page, re.M)
    assert len(commands) > 10  # the page's sections were found
    assert [command for command in commands if re.match(r"python\s+/", command)] == []


def test_a_script_run_by_its_absolute_path_is_written_from_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.report import command

    monkeypatch.setattr(sys, "argv", [str(ROOT / "bench" / "bench_stack.py"), "--rounds", "3"])
    monkeypatch.delitem(sys.modules, "__main__", raising=False)
    assert command() == "python bench/bench_stack.py --rounds 3"
