"""Regenerates the reference tables of the guide from the code, so they cannot drift.

    .venv/bin/python scripts/gen_config_reference.py           # rewrite the generated parts of the pages
    .venv/bin/python scripts/gen_config_reference.py --check   # exit 1 when a page differs (tests/docs does this)

docs/configuration.md: the services' pydantic-settings classes (field names, types, bounds, defaults,
descriptions), the proxy's pydantic config models, the proxy's argparse CLI and `make run`'s settings.
docs/monitoring.md: the metrics registries of the services and the proxy (names, types, labels, help); docs/jobs.md:
the jobs' metrics; docs/logs.md: the compose files' log limits. Each table
lives between
`<!-- generated:KEY:start -->` and `<!-- generated:KEY:end -->`; the prose around them is written by hand.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "configuration.md"
for package_dir in ("scripts", "common", "whisper-faster", "whisperx", "autostart"):
    if str(ROOT / package_dir) not in sys.path:
        sys.path.insert(0, str(ROOT / package_dir))


@dataclass(frozen=True)
class Row:
    name: str
    type: str
    default: str
    meaning: str


# -- types, bounds and defaults as an operator reads them ------------------------------------------------------


def type_text(annotation: Any, *, env: bool) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(f"`{_scalar(value)}`" for value in args)
    if origin in (Union, UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        return " or ".join(type_text(arg, env=env) for arg in inner)
    if origin is list:
        item = type_text(args[0], env=env)
        return f"comma-separated list of {item}s" if env else f"list of {item}s"
    if origin is dict:
        return f"object ({type_text(args[0], env=env)} → {type_text(args[1], env=env)})"
    names: dict[Any, str] = {
        str: "string", int: "integer", float: "number", bool: "boolean", Path: "path", SecretStr: "string (secret)"
    }
    if annotation in names:
        return names[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return getattr(annotation, "__name__", str(annotation))


def bounds_text(field: FieldInfo) -> str:
    parts: list[str] = []
    for item in field.metadata:
        if isinstance(item, Ge):
            parts.append(f"≥ {item.ge}")
        elif isinstance(item, Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, Le):
            parts.append(f"≤ {item.le}")
        elif isinstance(item, Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, MinLen) and item.min_length > 0:
            parts.append("not empty")
        elif isinstance(item, MaxLen):
            parts.append(f"at most {item.max_length} characters")
        elif getattr(item, "pattern", None):
            parts.append(f"matches `{item.pattern}`")
    return ", ".join(parts)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def default_text(field: FieldInfo, *, env: bool) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, Path):
        try:
            return f"`{value.relative_to(ROOT)}` (in the repository)"
        except ValueError:
            return f"`{value}`"
    if env:
        if isinstance(value, list):
            return "empty" if not value else "`" + ",".join(map(str, value)) + "`"
        if isinstance(value, str) and value == "":
            return "empty"
        return f"`{_scalar(value)}`"
    return f"`{json.dumps(value, default=str)}`"


def cell(text: str) -> str:
    """A table cell: pipes escaped, and `<`/`>` outside code spans as entities (else they read as HTML tags)."""
    parts = text.replace("|", "\\|").replace("\n", " ").strip().split("`")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- environment variables of pydantic-settings classes ------------------------------------------------------------


def env_rows(settings_class: type[BaseModel], prefix: str | None = None) -> Iterator[tuple[str, FieldInfo]]:
    """(environment variable, field) for every leaf field; nested models become `PARENT__CHILD`."""
    config = settings_class.model_config
    delimiter = config.get("env_nested_delimiter") or "__"
    if prefix is None:
        prefix = (config.get("env_prefix") or "").upper()
    for name, field in settings_class.model_fields.items():
        annotation = field.annotation
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            env = alias.choices[0].upper()
        elif isinstance(alias, str):
            env = alias.upper()
        else:
            env = f"{prefix}{name}".upper()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from env_rows(annotation, prefix=f"{env}{delimiter}")
            continue
        yield env, field


def env_table(settings_class: type[BaseModel]) -> str:
    rows = []
    for env, field in env_rows(settings_class):
        kind = type_text(field.annotation, env=True)
        bounds = bounds_text(field)
        rows.append([f"`{env}`", kind + (f" ({bounds})" if bounds else ""), default_text(field, env=True), field.description or ""])
    return markdown_table(["variable", "type", "default", "meaning"], rows)


def services_tables() -> dict[str, str]:
    from whisper_common.settings import ServiceSettings
    from whisper_faster.settings import Settings as FasterSettings
    from whisperx_api.settings import WhisperXSettings

    faster = dict(env_rows(FasterSettings))
    whisperx = dict(env_rows(WhisperXSettings))
    shared_names = [env for env, _ in env_rows(ServiceSettings)]
    shared_rows = []
    for env in shared_names:
        if env not in faster or env not in whisperx:
            continue
        field = faster[env]
        kind = type_text(field.annotation, env=True)
        bounds = bounds_text(field)
        shared_rows.append(
            [
                f"`{env}`",
                kind + (f" ({bounds})" if bounds else ""),
                default_text(field, env=True),
                default_text(whisperx[env], env=True),
                field.description or "",
            ]
        )
    tables_compose = compose_table(faster, whisperx)
    extra_faster = [env for env in faster if env not in shared_names]
    extra_whisperx = [env for env in whisperx if env not in shared_names]
    tables = {
        "service-env": markdown_table(
            ["variable", "type", "default (whisper-faster)", "default (whisperx)", "meaning"], shared_rows
        ),
        "whisperx-env": _subset_table(whisperx, extra_whisperx),
    }
    if extra_faster:
        tables["service-env"] += "\n\nOnly in whisper-faster:\n\n" + _subset_table(faster, extra_faster)
    tables["compose-env"] = tables_compose
    return tables


def compose_environment(compose_file: Path) -> dict[str, str]:
    """The `environment:` of the compose file's service: what reaches the container (values unexpanded)."""
    import yaml

    compose = yaml.safe_load(compose_file.read_text())
    environment: dict[str, str] = {}
    for service in compose["services"].values():
        block = service.get("environment") or {}
        if isinstance(block, list):
            block = dict(item.split("=", 1) if "=" in item else (item, "") for item in block)
        # A name without a value is passed through from the host's environment only when set there.
        environment.update({name: "(passed when set)" if value is None else str(value) for name, value in block.items()})
    return environment


def compose_table(faster: dict[str, FieldInfo], whisperx: dict[str, FieldInfo]) -> str:
    """Which settings each compose file hands to its container, and with what (a `.env` value or the default)."""
    columns = [
        (faster, compose_environment(ROOT / "whisper-faster" / "docker-compose.yml")),
        (whisperx, compose_environment(ROOT / "whisperx" / "docker-compose.yml")),
    ]
    rows = []
    for env in dict.fromkeys([*faster, *whisperx]):
        row = [f"`{env}`"]
        for fields, environment in columns:
            if env not in fields:
                row.append("—")
            elif environment.get(env) == "(passed when set)":
                row.append("passed when set")
            elif env in environment:
                row.append(f"`{environment[env]}`")
            else:
                row.append("**not passed**")
        rows.append(row)
    return markdown_table(["variable", "whisper-faster/docker-compose.yml", "whisperx/docker-compose.yml"], rows)


def _subset_table(fields: dict[str, FieldInfo], names: list[str]) -> str:
    rows = []
    for env in names:
        field = fields[env]
        kind = type_text(field.annotation, env=True)
        bounds = bounds_text(field)
        rows.append([f"`{env}`", kind + (f" ({bounds})" if bounds else ""), default_text(field, env=True), field.description or ""])
    return markdown_table(["variable", "type", "default", "meaning"], rows)


# -- the proxy: JSON config keys and command line ---------------------------------------------------------------


def config_table(model: type[BaseModel]) -> str:
    rows = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        kind = type_text(field.annotation, env=False)
        if get_origin(field.annotation) is dict and get_args(field.annotation)[1].__name__ == "ServiceConfig":
            kind = "object (host name → service)"
        bounds = bounds_text(field)
        rows.append([f"`{key}`", kind + (f" ({bounds})" if bounds else ""), default_text(field, env=False), field.description or ""])
    return markdown_table(["key", "type", "default", "meaning"], rows)


def proxy_tables() -> dict[str, str]:
    from autostart.config import AutostartConfig, ServiceConfig

    return {"proxy-top": config_table(AutostartConfig), "proxy-service": config_table(ServiceConfig)}


def cli_table() -> str:
    from autostart.__main__ import build_parser

    rows = []
    for action in build_parser()._actions:
        if not action.option_strings or "--help" in action.option_strings:
            continue
        flag = ", ".join(f"`{option}`" for option in action.option_strings)
        if action.nargs == 0:
            default = "off"
        elif action.option_strings == ["--listen"]:
            default = "`127.0.0.1:8890`"
        else:
            default = f"`{action.default}`"
        meaning = re.sub(r"\s*\(default: [^)]*\)", "", action.help or "").strip()
        if action.choices:
            meaning = (meaning + " " if meaning else "") + "One of " + ", ".join(f"`{c}`" for c in action.choices) + "."
        rows.append([flag, default, meaning])
    return markdown_table(["option", "default", "meaning"], rows)


def run_table() -> str:
    from stack.settings import RunSettings

    return env_table(RunSettings)


# -- metrics: names, types, labels and help text, from the registries themselves --------------------------------


def metrics_table(registry: Any) -> str:
    rows = []
    for collector in list(registry._collector_to_names):  # noqa: SLF001 - the registry has no public walk
        declared = list(getattr(collector, "_labelnames", ()))
        for family in collector.collect():
            label_names = declared or list(
                dict.fromkeys(key for sample in family.samples for key in sample.labels if key != "le")
            )
            exposed = {
                "counter": f"{family.name}_total",
                "histogram": f"{family.name}_bucket / _sum / _count",
                "gauge": family.name,
            }.get(family.type, family.name)
            labels = ", ".join(f"`{label}`" for label in label_names) or "—"
            rows.append([f"`{exposed}`", family.type, labels, family.documentation])
    return markdown_table(["metric", "type", "labels", "meaning"], rows)


def metrics_tables() -> dict[str, str]:
    from types import SimpleNamespace

    from autostart.lifecycle import State
    from autostart.status import Metrics
    from whisper_common.metrics import ServiceMetrics

    # Some of the proxy's series are read from its state when scraped: one stand-in service and one counted
    # request make them appear, with their labels.
    example = SimpleNamespace(name="whisper-faster", in_flight=0, waiting=0, state=State.STOPPED)
    proxy_metrics = Metrics({"whisper.example.com": example})  # type: ignore[dict-item]
    proxy_metrics.count_request("whisper-faster", 200)
    return {
        "metrics-service": metrics_table(ServiceMetrics(namespace="whisper_faster").registry),
        "metrics-proxy": metrics_table(proxy_metrics.registry),
        "metrics-realtime": realtime_metrics_table(),
    }


def realtime_metrics_table() -> str:
    from prometheus_client import CollectorRegistry

    from whisper_faster.realtime.admission import RealtimeMetrics

    registry = CollectorRegistry()
    RealtimeMetrics(registry)
    return metrics_table(registry)


def jobs_metrics_table() -> str:
    from prometheus_client import CollectorRegistry

    from whisper_common.jobs.metrics import JobMetrics
    from whisper_common.jobs.records import JobStatus

    registry = CollectorRegistry()
    JobMetrics(registry, "whisper_faster", lambda: ({status.value: 0 for status in JobStatus}, None))
    return metrics_table(registry)


# -- log limits of the compose files -----------------------------------------------------------------------------

COMPOSE_FILES = (ROOT / "whisper-faster" / "docker-compose.yml", ROOT / "whisperx" / "docker-compose.yml")
_INTERPOLATION = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+)(?::?-(?P<default>[^}]*))?\}$")
_SIZE_UNITS = {"b": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def _setting(value: object) -> tuple[str, str]:
    """(what the cell says, the value in force by default) for a compose value, `${VAR:-default}` or a literal."""
    match = _INTERPOLATION.match(str(value))
    if match:
        return f"`{match.group('default')}` (`{match.group('name')}`)", match.group("default") or ""
    return f"`{value}`", str(value)


def _bytes(size: str) -> int:
    """Docker's size notation: 10m = 10 MB (units of 1000, as the json-file driver parses them)."""
    number, unit = re.fullmatch(r"(\d+)([bkmg]?)", size.strip().lower()).groups()  # type: ignore[union-attr]
    return int(number) * _SIZE_UNITS[unit or "b"]


def logging_table() -> str:
    """Each container's log driver and limits as the compose files set them (unexpanded), and the most it keeps."""
    import yaml

    rows = []
    for compose_file in COMPOSE_FILES:
        for name, service in yaml.safe_load(compose_file.read_text())["services"].items():
            logging = service.get("logging") or {}
            options = logging.get("options") or {}
            size_cell, size = _setting(options.get("max-size", "unlimited"))
            files_cell, files = _setting(options.get("max-file", "1"))
            most = f"{_bytes(size) * int(files) / 1000**2:g} MB" if size != "unlimited" else "**unbounded**"
            rows.append([
                f"`{compose_file.relative_to(ROOT)}`", f"`{service.get('container_name', name)}`",
                f"`{logging.get('driver', 'json-file')}`", size_cell, files_cell, most,
            ])
    return markdown_table(["compose file", "container", "driver", "max-size (variable)", "max-file (variable)", "at most"], rows)


CONFIGURATION_PAGE = PAGE
MONITORING_PAGE = ROOT / "docs" / "monitoring.md"
JOBS_PAGE = ROOT / "docs" / "jobs.md"
LOGS_PAGE = ROOT / "docs" / "logs.md"


def generated_pages() -> dict[Path, dict[str, str]]:
    configuration = services_tables()
    configuration.update(proxy_tables())
    configuration["proxy-cli"] = cli_table()
    configuration["make-run-env"] = run_table()
    return {
        CONFIGURATION_PAGE: configuration,
        MONITORING_PAGE: metrics_tables(),
        JOBS_PAGE: {"metrics-jobs": jobs_metrics_table()},
        LOGS_PAGE: {"compose-logging": logging_table()},
    }


# -- the page --------------------------------------------------------------------------------------------------

_SECTION = re.compile(r"(<!-- generated:(?P<key>[a-z-]+):start -->\n)(.*?)(<!-- generated:(?P=key):end -->)", re.S)


def render(page: str, sections: dict[str, str], path: Path = PAGE) -> str:
    found: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        key = match.group("key")
        if key not in sections:
            raise SystemExit(f"{path}: unknown generated section {key!r}")
        found.add(key)
        return f"{match.group(1)}{sections[key]}\n{match.group(4)}"

    text = _SECTION.sub(replace, page)
    missing = set(sections) - found
    if missing:
        raise SystemExit(f"{path}: no markers for {', '.join(sorted(missing))}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is not up to date")
    args = parser.parse_args(argv)
    stale = 0
    for path, sections in generated_pages().items():
        current = path.read_text()
        expected = render(current, sections, path)
        if current == expected:
            continue
        if args.check:
            print(f"{path} is out of date: run .venv/bin/python scripts/gen_config_reference.py", file=sys.stderr)
            stale += 1
        else:
            path.write_text(expected)
            print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
