"""Prints the requirements of a role: pyproject.toml's base dependencies and the named extras, one per line.

    python3 scripts/requirements.py whisper-faster cuda      # what the whisper-faster GPU image installs
    python3 scripts/requirements.py --only cuda               # the extra alone, without the base dependencies

An extra that names the project itself (`whisper-platform[service]`) is expanded in place, so the lines can go to
`pip install -c constraints.txt -r -` without the project's source (the image builds install the dependencies in a
layer of their own, before the source is copied). Standard library only: it runs on the bare base image.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(project: dict, extras: list[str], *, base: bool = True) -> list[str]:
    name = re.escape(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    lines: dict[str, None] = dict.fromkeys(project.get("dependencies", []) if base else [])
    seen: set[str] = set()

    def add(extra: str) -> None:
        if extra in seen:
            return
        if extra not in optional:
            raise SystemExit(f"requirements.py: pyproject.toml has no extra '{extra}' (it has: {', '.join(optional)})")
        seen.add(extra)
        for requirement in optional[extra]:
            own = re.fullmatch(rf"{name}\[([^\]]+)\]", requirement.strip())
            if own:
                for inner in own.group(1).split(","):
                    add(inner.strip())
            else:
                lines.setdefault(requirement)

    for extra in extras:
        add(extra)
    return list(lines)


def main(argv: list[str]) -> int:
    path = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not path.is_file():
        path = Path("pyproject.toml")
    project = tomllib.loads(path.read_text())["project"]
    only = "--only" in argv
    lines = requirements(project, [arg for arg in argv if arg != "--only"], base=not only)
    if lines:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
