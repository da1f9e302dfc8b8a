"""The layering of docs/architecture.md, checked on the code: the core knows no service, the services never import each
other, the proxy imports neither the core nor a service, runtime code never imports the deploy scripts, and the
modules below the HTTP layer import no web framework. The imports are read with `ast` (scripts/gen_architecture.py),
function-level and TYPE_CHECKING imports included. The page's generated import map must equal the code's."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_architecture", ROOT / "scripts" / "gen_architecture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_no_import_breaks_the_layering(generator: ModuleType) -> None:
    assert generator.violations() == []


def test_every_module_below_the_http_layer_exists(generator: ModuleType) -> None:
    """A rule about a module that was renamed away would pass for ever: each named module must still be there."""
    for dotted in generator.WITHOUT_HTTP:
        package, _, rest = dotted.partition(".")
        folder = generator.BY_PACKAGE[package].folder
        path = folder.joinpath(*rest.split("."))
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), dotted


def test_every_package_is_a_component(generator: ModuleType) -> None:
    """A new top-level package outside the components would escape the rules."""
    for folder in ("common", "whisper-faster", "whisperx", "autostart"):
        packages = {p.parent.name for p in (ROOT / folder).glob("*/__init__.py")}
        assert packages <= set(generator.BY_PACKAGE), (folder, packages)


@pytest.mark.parametrize(
    ("component", "source", "why"),
    [
        ("core", "from whisper_faster.settings import Settings\n", "core may not import whisper-faster"),
        ("whisperx", "def f():\n    import whisper_faster.realtime\n", "whisperx may not import whisper-faster"),
        ("proxy", "from whisper_common.errors import ApiError\n", "proxy may not import core"),
        ("whisper-faster", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stack import deploy\n",
         "whisper-faster may not import deploy scripts"),
    ],
)
def test_a_forbidden_import_is_found(generator: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     component: str, source: str, why: str) -> None:
    """The checker itself: a copy of the component with one forbidden import added is reported, with where it is."""
    original = next(c for c in generator.COMPONENTS if c.name == component)
    copy = tmp_path / original.folder.name
    shutil.copytree(original.folder, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "intruder.py").write_text(source)
    components = tuple(generator.Component(c.name, c.package, copy if c is original else c.folder)
                       for c in generator.COMPONENTS)
    monkeypatch.setattr(generator, "COMPONENTS", components)
    found = generator.violations()
    assert len(found) == 1 and why in found[0] and "intruder.py" in found[0], found


def test_a_store_importing_a_web_framework_is_found(generator: ModuleType, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    core = generator.COMPONENTS[0]
    copy = tmp_path / core.folder.name
    shutil.copytree(core.folder, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "db" / "sqlite.py").write_text((copy / "db" / "sqlite.py").read_text() + "\nfrom fastapi import Request\n")
    monkeypatch.setattr(generator, "COMPONENTS", (generator.Component("core", core.package, copy),
                                                  *generator.COMPONENTS[1:]))
    found = generator.violations()
    assert len(found) == 1 and "below the HTTP layer" in found[0] and "db/sqlite.py" in found[0], found


def test_the_page_shows_the_imports_of_the_code(generator: ModuleType) -> None:
    committed = generator.PAGE.read_text()
    assert committed == generator.render(committed), "run .venv/bin/python scripts/gen_architecture.py"
