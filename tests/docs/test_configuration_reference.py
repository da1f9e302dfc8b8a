"""docs/configuration.md (settings classes, proxy config models, CLI) and the metric tables of docs/monitoring.md
(metrics registries) are generated from the code: regenerating them must give the committed pages, so a changed
default, bound, description, a new setting or a renamed metric fails here until the pages are regenerated
(`.venv/bin/python scripts/gen_config_reference.py`)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_reference", ROOT / "scripts" / "gen_config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_committed_pages_equal_regenerated_pages() -> None:
    generator = load_generator()
    for path, sections in generator.generated_pages().items():
        committed = path.read_text()
        regenerated = generator.render(committed, sections, path)
        assert committed == regenerated, (
            f"{path.relative_to(ROOT)} is out of date with the code: run `.venv/bin/python scripts/gen_config_reference.py`"
        )


def test_every_setting_appears_once_per_service_table() -> None:
    from whisper_faster.settings import Settings
    from whisperx_api.settings import WhisperXSettings

    generator = load_generator()
    page = generator.PAGE.read_text()
    for settings_class in (Settings, WhisperXSettings):
        for env, _ in generator.env_rows(settings_class):
            assert f"| `{env}` |" in page, f"{env} of {settings_class.__name__} is missing from the reference"


def test_every_proxy_key_is_documented() -> None:
    from autostart.config import AutostartConfig, ServiceConfig

    page = (ROOT / "docs" / "configuration.md").read_text()
    for model in (AutostartConfig, ServiceConfig):
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in page, f"proxy key {field.alias or name} is not documented"


def test_a_stale_page_is_detected() -> None:
    generator = load_generator()
    stale = generator.PAGE.read_text().replace("| `MAX_QUEUE` |", "| `MAX_QUEUE_OLD` |", 1)
    sections = generator.generated_pages()[generator.PAGE]
    assert generator.render(stale, sections) != stale


def _compose_environment(path: Path) -> set[str]:
    compose = yaml.safe_load(path.read_text())
    names: set[str] = set()
    for service in compose["services"].values():
        names.update(service.get("environment", {}))
    return names


def test_every_setting_of_each_service_reaches_its_container() -> None:
    # Each compose file hands every setting of its service to the container (a value, or passed when set), so an
    # operator's .env line is never silently dropped.
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = page[page.index("<!-- generated:compose-env:start -->"):]
    table = table[:table.index("<!-- generated:compose-env:end -->")]
    assert "| `MAX_QUEUE` |" in table
    assert "**not passed**" not in table, [line for line in table.splitlines() if "**not passed**" in line]


def test_every_variable_the_docker_files_set_is_documented() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    compose_files = [ROOT / "whisper-faster" / "docker-compose.yml", ROOT / "whisperx" / "docker-compose.yml"]
    env_examples = [ROOT / "whisper-faster" / ".env.example", ROOT / "whisperx" / ".env.example"]
    names: set[str] = set()
    for path in compose_files:
        names |= _compose_environment(path)
    for path in env_examples:
        for line in path.read_text().splitlines():
            line = line.lstrip("# ").strip()
            if "=" in line and line.split("=", 1)[0].isupper() and " " not in line.split("=", 1)[0]:
                names.add(line.split("=", 1)[0])
    build_args = {"BASE_IMAGE", "TORCH_INDEX_URL"}
    undocumented = sorted(name for name in names - build_args if f"`{name}" not in page)
    assert not undocumented, f"set by the Docker files but not in docs/configuration.md: {undocumented}"
