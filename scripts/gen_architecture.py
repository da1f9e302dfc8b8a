"""Regenerates the import map of docs/architecture.md from the code, so the page cannot drift from it.

    .venv/bin/python scripts/gen_architecture.py           # rewrite the generated parts of the page
    .venv/bin/python scripts/gen_architecture.py --check   # exit 1 when the page differs (tests/architecture does this)

Every `import` and `from … import` of every module (function-level imports included, `if TYPE_CHECKING:` ones too:
a type is a dependency) is read with `ast`, never executed. Two tables are generated: which component imports which
(a mermaid graph), and which packages of the shared core each component uses. The layering rules themselves
(`RULES`) are checked by tests/architecture/test_layering.py with the same reader.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"


@dataclass(frozen=True)
class Component:
    name: str
    package: str
    """The top-level import name."""
    folder: Path
    """The package's folder (the one holding its __init__.py)."""


COMPONENTS = (
    Component("core", "whisper_common", ROOT / "common" / "whisper_common"),
    Component("whisper-faster", "whisper_faster", ROOT / "whisper-faster" / "whisper_faster"),
    Component("whisperx", "whisperx_api", ROOT / "whisperx" / "whisperx_api"),
    Component("proxy", "autostart", ROOT / "autostart" / "autostart"),
    Component("deploy scripts", "stack", ROOT / "scripts" / "stack"),
)
BY_PACKAGE = {component.package: component for component in COMPONENTS}

RULES: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "whisper-faster": frozenset({"core"}),
    "whisperx": frozenset({"core"}),
    "proxy": frozenset(),
    "deploy scripts": frozenset({"core"}),
}
"""Which other components each component may import. The core knows no service; the services never import each
other (separate images); the proxy imports neither the core nor a service (its image carries no service code); runtime
code never imports the deploy scripts. The deploy scripts use the core's backup manifest (one format on both sides)."""

WITHOUT_HTTP = ("whisper_common.db", "whisper_common.batching.scheduler", "whisper_common.batching.ctranslate2_ops",
                "whisper_common.speech_gate", "whisper_common.speech_guard", "whisper_common.speakers.encoder",
                "whisper_common.speakers.matching", "whisper_common.jobs.store", "whisper_common.jobs.sqlite",
                "whisper_common.jobs.postgres", "autostart.lifecycle")
"""Modules below the HTTP layer: they import no web framework or HTTP client (a scheduler must not know HTTP; stores
and the proxy's state machine never build responses)."""
HTTP_PACKAGES = frozenset({"fastapi", "starlette", "httpx", "aiohttp", "uvicorn"})


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module's dotted name."""
    target: str
    """The imported module's dotted name (absolute)."""
    line: int
    path: Path


def module_name(component: Component, path: Path) -> str:
    parts = list(path.relative_to(component.folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([component.package, *parts])


def imports_of(component: Component) -> Iterator[Import]:
    """Every import in the component's modules, relative ones made absolute."""
    for path in sorted(component.folder.rglob("*.py")):
        name = module_name(component, path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(name, alias.name, node.lineno, path)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                yield Import(name, target, node.lineno, path)


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def component_of(target: str) -> Component | None:
    return BY_PACKAGE.get(target.partition(".")[0])


def violations() -> list[str]:
    """Every import that breaks RULES or WITHOUT_HTTP, as 'path:line: module imports target (why)'."""
    found: list[str] = []
    for component in COMPONENTS:
        allowed = RULES[component.name] | {component.name}
        for edge in imports_of(component):
            other = component_of(edge.target)
            where = f"{shown(edge.path)}:{edge.line}: {edge.module} imports {edge.target}"
            if other is not None and other.name not in allowed:
                found.append(f"{where} ({component.name} may not import {other.name})")
            below_http = any(edge.module == low or edge.module.startswith(low + ".") for low in WITHOUT_HTTP)
            if below_http and edge.target.partition(".")[0] in HTTP_PACKAGES:
                found.append(f"{where} (below the HTTP layer)")
    return found


def core_package(target: str) -> str:
    """whisper_common.jobs.store -> jobs; whisper_common.options -> options."""
    parts = target.split(".")
    return parts[1] if len(parts) > 1 else "(whisper_common itself)"


def render_graph() -> str:
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for component in COMPONENTS:
        for edge in imports_of(component):
            other = component_of(edge.target)
            if other is not None and other is not component:
                edges[(component.name, other.name)] += 1
    ids = {component.name: component.package for component in COMPONENTS}
    lines = ["```mermaid", "flowchart TD"]
    lines += [f'    {ids[c.name]}["{c.name}<br/><code>{c.package}</code>"]' for c in COMPONENTS]
    lines += [f"    {ids[a]} -->|{count} imports| {ids[b]}" for (a, b), count in sorted(edges.items())]
    lines.append("```")
    return "\n".join(lines)


def render_core_use() -> str:
    used: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for component in COMPONENTS:
        for edge in imports_of(component):
            if edge.target.startswith("whisper_common"):
                used[core_package(edge.target)][component.name].add(edge.module)
    users = [c for c in COMPONENTS if c.name != "core"]
    header = "| core module or package | " + " | ".join(c.name for c in users) + " | other core packages using it |"
    rows = [header, "|---" * (len(users) + 2) + "|"]
    for package in sorted(set(used) | {core_package(f"whisper_common.{p}") for p in core_packages()}):
        cells = [str(len(used[package][c.name])) if used[package][c.name] else "" for c in users]
        inside = sorted({core_package(module) for module in used[package].get("core", set())} - {package})
        rows.append(f"| `{package}` | " + " | ".join(cells) + f" | {', '.join(inside)} |")
    return "\n".join(rows)


def core_packages() -> list[str]:
    folder = COMPONENTS[0].folder
    names = [p.stem for p in folder.glob("*.py") if p.stem != "__init__"]
    names += [p.name for p in folder.iterdir() if (p / "__init__.py").exists()]
    return sorted(names)


SECTIONS = {"architecture-graph": render_graph, "architecture-core": render_core_use}


def render(page: str) -> str:
    for key, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated:{key}:start -->\n).*?(\n<!-- generated:{key}:end -->)", re.S)
        if not pattern.search(page):
            raise SystemExit(f"{PAGE.relative_to(ROOT)} has no generated:{key} markers")
        page = pattern.sub(lambda match: match.group(1) + make() + match.group(2), page)
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page differs from the code")
    args = parser.parse_args()
    committed = PAGE.read_text()
    regenerated = render(committed)
    if args.check:
        if committed != regenerated:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run scripts/gen_architecture.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(regenerated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
