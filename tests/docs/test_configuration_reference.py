"""docs/configuration.md (settings classes, proxy config models, CLI) and the metric tables of docs/monitoring.md
(metrics registries) are generated from the code: regenerating them must give the committed pages, so a changed
default, bound, description, a new setting or a renamed metric fails here until the pages are regenerated
(`.venv/bin/python scripts/gen_config_reference.py`)."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
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


COMPOSE_FILES = [ROOT / "whisper-faster" / "docker-compose.yml", ROOT / "whisperx" / "docker-compose.yml"]
ENV_EXAMPLES = [ROOT / "whisper-faster" / ".env.example", ROOT / "whisperx" / ".env.example"]


def _interpolated(path: Path) -> set[str]:
    """Variables the compose file reads from `.env` or the shell (`${NAME}`, `${NAME:-default}`)."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))


def _env_example_names(path: Path) -> set[str]:
    """Every `NAME=` line of an .env.example, commented-out examples included."""
    return set(re.findall(r"(?:^|[\s#])([A-Z][A-Z0-9_]{2,})=", path.read_text(), flags=re.M))


def test_every_variable_the_docker_files_set_is_documented() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    names: set[str] = set()
    for path in COMPOSE_FILES:
        names |= _compose_environment(path) | _interpolated(path)
    for path in ENV_EXAMPLES:
        names |= _env_example_names(path)
    undocumented = sorted(name for name in names if f"`{name}" not in page)
    assert not undocumented, f"set by the Docker files but not in docs/configuration.md: {undocumented}"


@pytest.mark.parametrize("service", ["whisper-faster", "whisperx"])
def test_every_line_of_env_example_is_read_by_its_compose_file(service: str) -> None:
    # .env beside a compose file is read by compose alone: a name it never reads (a build argument, a typo) would be
    # a line that silently does nothing.
    compose_file = ROOT / service / "docker-compose.yml"
    read = _compose_environment(compose_file) | _interpolated(compose_file)
    unread = sorted(_env_example_names(ROOT / service / ".env.example") - read)
    assert not unread, f"{service}/.env.example names what its compose file never reads: {unread}"


def test_the_env_example_check_catches_a_build_argument(tmp_path: Path) -> None:
    example = tmp_path / ".env.example"
    example.write_text("# For a GPU image: BASE_IMAGE=nvidia/cuda:12.4.1\nMAX_QUEUE=16\n")
    assert _env_example_names(example) == {"BASE_IMAGE", "MAX_QUEUE"}
    assert "BASE_IMAGE" not in _interpolated(ROOT / "whisper-faster" / "docker-compose.yml")


# -- container logs: bounded in both compose files ---------------------------------------------------------------


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=lambda path: path.parent.name)
def test_every_container_log_is_bounded(compose_file: Path) -> None:
    generator = load_generator()
    for name, service in yaml.safe_load(compose_file.read_text())["services"].items():
        logging = service.get("logging")
        assert logging, f"{compose_file.parent.name}: service {name} has no logging: block (its log grows forever)"
        options = logging.get("options") or {}
        if logging.get("driver") == "local":
            continue  # bounded by its own defaults (100 MB per container)
        assert logging.get("driver") == "json-file", logging
        _, size = generator._setting(options.get("max-size", ""))
        _, files = generator._setting(options.get("max-file", ""))
        assert 0 < generator._bytes(size) <= 1000**3, f"{name}: max-size {size!r}"
        assert 1 <= int(files) <= 100, f"{name}: max-file {files!r}"


def test_the_log_limits_table_says_when_a_log_is_unbounded(tmp_path: Path) -> None:
    generator = load_generator()
    page = (ROOT / "docs" / "logs.md").read_text()
    assert "**unbounded**" not in page
    unbounded = tmp_path / "docker-compose.yml"
    compose = yaml.safe_load(COMPOSE_FILES[0].read_text())
    for service in compose["services"].values():
        service.pop("logging")
    unbounded.write_text(yaml.safe_dump(compose))
    original = generator.COMPOSE_FILES
    try:
        generator.COMPOSE_FILES = (unbounded,)
        generator.ROOT = tmp_path
        assert "**unbounded**" in generator.logging_table()
    finally:
        generator.COMPOSE_FILES, generator.ROOT = original, ROOT


@pytest.mark.skipif(shutil.which("docker-compose") is None and shutil.which("docker") is None, reason="no compose")
@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=lambda path: path.parent.name)
def test_compose_itself_reads_the_log_limits(compose_file: Path) -> None:
    # What compose makes of the block, with a value from the environment: the limits reach the container's config.
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        result = subprocess.run(
            [*command, "--project-directory", str(compose_file.parent), "-f", str(compose_file), "config"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "LOG_MAX_SIZE": "7m"},
        )
        if result.returncode != 0:
            continue  # `docker` without the compose plugin
        logging = next(iter(yaml.safe_load(result.stdout)["services"].values()))["logging"]
        assert logging["driver"] == "json-file"
        assert logging["options"]["max-size"] == "7m"
        assert str(logging["options"]["max-file"]) == "5"
        return
    pytest.skip("neither `docker compose` nor `docker-compose` runs here")
