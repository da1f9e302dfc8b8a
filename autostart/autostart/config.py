"""The proxy's configuration: one JSON file, validated at start-up.

Keys are camelCase as in the deployment's existing `config.json`. Every field carries a description; the
docs' configuration reference is generated from these classes (`ServiceConfig.model_json_schema()`).
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$")

Seconds = Annotated[float, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True, validate_default=True
    )


def _argv(value: Any) -> Any:
    """A command is an argv list; a string is split like a shell would (no shell is involved)."""
    if isinstance(value, str):
        argv = shlex.split(value)
        if not argv:
            raise ValueError("must not be empty")
        return argv
    return value


class ServiceConfig(_Model):
    """One service behind the proxy, keyed by the host name its requests carry."""

    name: str = Field(min_length=1, description="Name used in logs, metrics, status and error bodies.")
    provider: Literal["docker", "command"] = Field(
        "docker",
        description="How the service is started and stopped: `docker` (containers via the Docker Engine API) "
        "or `command` (a child process of the proxy).",
    )
    proxy_port: int = Field(ge=1, le=65535, description="TCP port the service listens on; requests go there.")
    upstream_host: str = Field(
        "127.0.0.1", min_length=1, description="Host (name or address) the service listens on."
    )
    blocking: bool = Field(
        True,
        description="true: hold a request while the service starts, then answer it. false: answer 503 at once "
        "(a self-refreshing page for browsers, JSON for other clients) while the start goes on.",
    )
    containers: list[str] = Field(
        default_factory=list,
        description="`docker`: names (or ids) of the containers to start; the service is running when all are.",
    )
    compose_dir: Path | None = Field(
        None,
        description="`docker`: folder with the compose file; when a container does not exist the proxy runs "
        "`docker compose up -d` there. Relative to the config file.",
    )
    health_path: str = Field(
        "/health",
        pattern=r"^/",
        description="Path polled until it answers 2xx (when the container defines no Docker healthcheck).",
    )
    readiness: Literal["auto", "docker", "http"] = Field(
        "auto",
        description="`docker`: how readiness is decided. `auto`: Docker's `healthy` when the container defines a "
        "HEALTHCHECK, else the HTTP probe of healthPath; `docker`: only Docker's health status; `http`: always "
        "the HTTP probe, polled every readyPollInterval (faster wakes than a healthcheck's interval).",
    )
    start_timeout: float = Field(
        60, gt=0, description="Seconds a start may take until healthy; past it a waiting request gets 504."
    )
    progress_timeout: Seconds = Field(
        3600,
        description="Seconds a start may take in all while the service reports progress: a not-ready answer of "
        "healthPath whose JSON body has a `progress` member that changes (e.g. bytes of a model download). Past "
        "startTimeout the start goes on only while that value changes at least every startTimeout seconds; "
        "waiting requests still get 504 after startTimeout. 0 = never past startTimeout.",
    )
    failed_start_backoff: Seconds = Field(
        15,
        description="Seconds before the proxy tries again to start a service that said it cannot start (its "
        "healthPath answered `\"status\": \"failed\"` with a reason, e.g. a model that cannot be loaded). Waiting "
        "requests get 503 with that reason at once; requests within the back-off get the same 503 with "
        "Retry-After; the wait doubles with each such failure in a row, up to 300 s. 0 = the next request tries "
        "at once.",
    )
    activity_path: str | None = Field(
        "/health/activity",
        pattern=r"^/",
        description="Path asked before an idle stop: an answer `{\"busy\": true, ...}` (jobs queued or running, "
        "open realtime sessions) postpones the stop by another idleTimeout; any other answer (404, an error, "
        "none within 2 s) lets it go ahead. null = never ask.",
    )
    idle_timeout: Seconds = Field(
        900, description="Seconds without requests (and none in flight) after which the service is stopped; 0 = never."
    )
    resume_grace: Seconds = Field(
        120,
        description="After a fresh start of the proxy (a boot, a crash, a restart; not a hand-over), a stopped "
        "service that ran before and was interrupted (`docker`: its containers exited rather than being only "
        "created) is started once without a request, so that the jobs it had queued resume; it then stays up this "
        "many seconds, or for as long as activityPath says it is busy, before the idle rule stops it (long enough "
        "for jobs the restart interrupted to come back to the queue when their lease runs out). A resume whose start "
        "fails is tried again after 10 s, then twice the last wait, up to 300 s. 0 = never resume.",
    )
    stop_timeout: Seconds = Field(
        10, description="Seconds a stop waits for the service to exit before it is killed."
    )
    request_timeout: float = Field(600, gt=0, description="Seconds one proxied request may take in all.")
    max_waiting: int = Field(
        1000, ge=1, description="Requests that may wait on one start; more get 503 with Retry-After."
    )
    ready_poll_interval: float = Field(
        0.1, gt=0, le=0.25, description="Seconds between readiness probes during a start."
    )
    ignore_user_agents: list[str] = Field(
        default_factory=list,
        description="Regular expressions (case-insensitive, searched in User-Agent): matching requests "
        "neither start the service nor keep it awake; they get 503 while it sleeps. Added to the global list.",
    )
    start_command: list[str] | None = Field(
        None,
        description="`command`: the argv that runs the service in the foreground (a string is split like a "
        "shell would, without a shell).",
    )
    stop_command: list[str] | None = Field(
        None,
        description="`command`: argv that stops the service; without it the proxy sends SIGTERM, then SIGKILL "
        "after stopTimeout.",
    )
    cwd: Path | None = Field(None, description="`command`: working directory, relative to the config file.")
    env: dict[str, str] = Field(
        default_factory=dict, description="`command`: environment variables added to the proxy's own."
    )

    _split_commands = field_validator("start_command", "stop_command", mode="before")(_argv)

    @field_validator("ignore_user_agents")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return patterns

    @model_validator(mode="after")
    def _provider_needs(self) -> ServiceConfig:
        if self.provider == "docker" and not self.containers:
            raise ValueError("provider 'docker' needs at least one entry in 'containers'")
        if self.provider == "command" and not self.start_command:
            raise ValueError("provider 'command' needs 'startCommand'")
        return self


class AutostartConfig(_Model):
    """The whole file: the services by host name, plus settings for the proxy itself."""

    services: dict[str, ServiceConfig] = Field(
        description="Services by the host name clients use (matched case-insensitively, port ignored)."
    )
    status_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description="Host names on which /_autostart/status and /_autostart/metrics answer (besides any "
        "request from a loopback address to a host that is not a service).",
    )
    ignore_user_agents: list[str] = Field(
        default_factory=list,
        description="Regular expressions for User-Agents (uptime monitors) that apply to every service.",
    )
    check_interval: float = Field(
        2, gt=0, le=60, description="Seconds between checks for idle services and services stopped from outside."
    )
    access_log: bool = Field(False, description="Log one JSON line per proxied request (off: only events).")

    _patterns_compile = field_validator("ignore_user_agents")(ServiceConfig._patterns_compile.__func__)

    @field_validator("services")
    @classmethod
    def _hosts_valid(cls, services: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        if not services:
            raise ValueError("at least one service is needed")
        normalised: dict[str, ServiceConfig] = {}
        for host, service in services.items():
            key = host.strip().lower().rstrip(".")
            if not _HOSTNAME.match(key):
                raise ValueError(f"{host!r} is not a host name (no port, no scheme)")
            if key in normalised:
                raise ValueError(f"host {host!r} is listed twice")
            normalised[key] = service
        seen: dict[tuple[str, int], str] = {}
        names: dict[str, str] = {}
        for host, service in normalised.items():
            target = (service.upstream_host, service.proxy_port)
            if target in seen:
                raise ValueError(
                    f"duplicate proxyPort {service.proxy_port}: services {seen[target]!r} and {host!r}"
                )
            seen[target] = host
            if service.name in names:
                raise ValueError(f"duplicate name {service.name!r}: services {names[service.name]!r} and {host!r}")
            names[service.name] = host
        return normalised

    def resolved(self, base_dir: Path) -> AutostartConfig:
        """The same config with relative composeDir/cwd made absolute against the config file's folder."""
        services = {
            host: service.model_copy(
                update={
                    "compose_dir": (base_dir / service.compose_dir).resolve() if service.compose_dir else None,
                    "cwd": (base_dir / service.cwd).resolve() if service.cwd else None,
                }
            )
            for host, service in self.services.items()
        }
        return self.model_copy(update={"services": services})


class ConfigError(Exception):
    """The file cannot be used; the message names the file and the offending key."""


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int) or (isinstance(item, str) and not re.fullmatch(r"[A-Za-z_]\w*", item)):
            parts.append(f"[{item!r}]" if isinstance(item, str) else f"[{item}]")
        else:
            parts.append(f".{item}" if parts else item)
    return "".join(parts) or "(top level)"


def describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        loc = tuple(p for p in problem["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{_location(loc)}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, base_dir: Path) -> AutostartConfig:
    try:
        return AutostartConfig.model_validate(data).resolved(base_dir)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def load_config(path: Path) -> AutostartConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    try:
        return parse_config(data, path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}:\n{exc}") from None


def _type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (Union, UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin is list:
        return f"list of {_type_name(args[0])}s"
    if origin is dict:
        value = "services" if args[1] is ServiceConfig else f"{_type_name(args[1])}s"
        return f"object: {_type_name(args[0])} → {value}"
    names = {float: "number", int: "integer", str: "string", bool: "boolean", Path: "path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return "—" if value is None else f"`{json.dumps(value, default=str)}`"


def reference_markdown() -> str:
    """The configuration reference (Markdown tables), generated from the models so it cannot drift."""
    sections = []
    for title, model in (("Top level", AutostartConfig), ("Per service (`services.<host>`)", ServiceConfig)):
        rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            key = field.alias or name
            meaning = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{key}` | {_type_name(field.annotation)} | {_default_text(field)} | {meaning} |")
        sections.append(f"### {title}\n\n" + "\n".join(rows))
    return "\n\n".join(sections) + "\n"
