"""Writes one benchmark's section of docs/benchmarks.md, leaving the other sections as they are."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Every figure here is written by a script in `bench/` (`make bench` runs them all). Each section names the
command and the machine it ran on; a ratio compares against a baseline measured in the same run.
"""


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def command() -> str:
    """The command line as typed: `python -m bench.x ...` when run as a module, else the script path."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["-m", spec.name] if spec is not None and spec.name else [_from_root(sys.argv[0])]
    return " ".join(shlex.quote(a) for a in ["python", *head, *sys.argv[1:]])


def _from_root(script: str) -> str:
    """A script's path as typed from the project's root (no machine's absolute path in the guide)."""
    path = Path(script).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else script


def vm_hwm_mb(status: str) -> float:
    """Peak resident memory (VmHWM) in MB, from the text of a /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM missing")


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a local process since it started, in MB."""
    return vm_hwm_mb(Path(f"/proc/{pid}/status").read_text())


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(key: str, title: str, body: str) -> str:
    """Replace (or append) the section `key` in docs/benchmarks.md and return its text."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    section = (
        f"<!-- bench:{key}:start -->\n## {title}\n\n"
        f"- Command: `{command()}`\n- Machine: {machine()}\n- Run: {stamp}{f', commit {rev}' if rev else ''}\n\n"
        f"{body.strip()}\n<!-- bench:{key}:end -->\n"
    )
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS_MD.write_text(text)
    print(section)
    return section
