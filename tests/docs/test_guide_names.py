"""The guide names only what the code has. Every backticked name in `docs/*.md` and `README.md` that looks like an
environment setting, a route, a Prometheus metric or a Makefile target must exist:

- settings: the services' and `make run`'s settings classes, the variables the compose files, Dockerfiles, shell
  scripts, the systemd unit and the Python code read, module constants of the code, and the few names other
  programs read (`LIBRARY_ENV`, each with who reads it);
- routes: matched against the real apps' routers (HTTP and WebSocket) and the proxy's own `/_autostart/` pages;
- metrics: the registries of both services (jobs and live sessions included) and of the proxy;
- `make` targets: the Makefile's rules.

The pages' other claims about the code are checked here too: every field of the proxy's status document and every
value of its stop and wake labels is in docs/monitoring.md; `make help` lists every target with its description.
"""
from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from starlette.routing import Match

from tests.deploy.wiring import known_metrics
from tests.docs.test_configuration_reference import load_generator

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

# Read by other programs than ours; each says who reads it.
LIBRARY_ENV: dict[str, str] = {
    "HF_HOME": "huggingface_hub: where the Hugging Face cache lives",
    "HF_HUB_OFFLINE": "huggingface_hub: never contact the hub",
    "HF_TOKEN": "huggingface_hub (and whisperx's settings): the hub token",
    "TORCH_HOME": "torch: where torch hub checkpoints (wav2vec2 alignment) are kept",
    "OMP_NUM_THREADS": "CTranslate2 / OpenMP: CPU threads",
    "DOCKER_HOST": "the Docker SDK and CLI: the engine's address",
    "DOCKER_BUILDKIT": "the docker CLI: build with BuildKit",
    "PIP_CERT": "pip: the CA bundle it trusts",
    "PIP_NO_INDEX": "pip: install only from PIP_FIND_LINKS",
    "PIP_FIND_LINKS": "pip: a folder of wheels to install from",
    "ALLOW_START": "the socket proxy image (autostart/docker-compose.socket-proxy.yml)",
    "ALLOW_STOP": "the socket proxy image (autostart/docker-compose.socket-proxy.yml)",
}
# Upper-case words of the guide that are no variables at all.
NOT_SETTINGS: dict[str, str] = {
    "AF_UNIX": "an address family (the systemd unit's RestrictAddressFamilies)",
    "AF_INET": "an address family",
    "AF_INET6": "an address family",
    "SPEAKER_00": "WhisperX's speaker labels",
    "SPEAKER_01": "WhisperX's speaker labels",
}
GENERATOR = load_generator()  # the configuration reference's generator: env names as the settings classes read them
PROXY_SOURCES = ("autostart/autostart/proxy.py", "autostart/autostart/fastpath.py", "autostart/autostart/routes.py")


@dataclass(frozen=True)
class Mention:
    page: str
    text: str

    def __str__(self) -> str:
        return f"{self.page}: {self.text}"


# --- reading the pages --------------------------------------------------------------------------------------------


def code_of(text: str) -> tuple[list[str], list[str]]:
    """(inline code spans outside fences, lines inside fenced blocks)."""
    spans: list[str] = []
    fenced: list[str] = []
    inside = False
    for line in text.splitlines():
        if re.match(r"\s*(```|~~~)", line):
            inside = not inside
            continue
        if inside:
            fenced.append(line)
        else:
            spans += re.findall(r"`([^`\n]+)`", line)
    return spans, fenced


SETTING = re.compile(r"^([A-Z][A-Z0-9]*(?:__?[A-Z0-9]+)+)(?:[=:].*)?$")
ROUTE = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s+(/\S*)")
BARE_ROUTE = re.compile(r"^(/(?:v1|health|_autostart)\S*)")
METRIC = re.compile(r"(?<![\w./-])(?:whisper_faster|whisperx|autostart|\*)_[a-z0-9_]+(?![\w./-])")
PACKAGES = frozenset({"whisperx_api"})
"""Python packages named like metrics (whisperx's package), and paths in them (`whisperx_api/jobs.py`): no metric."""


@cache
def volume_names() -> frozenset[str]:
    """The compose projects' volumes (`whisperx_data`): named like metrics, but no metric."""
    import yaml

    return frozenset(
        f"{path.parent.name}_{volume}"
        for path in (ROOT / "whisper-faster" / "docker-compose.yml", ROOT / "whisperx" / "docker-compose.yml")
        for volume in (yaml.safe_load(path.read_text()).get("volumes") or {})
    )
MAKE_INLINE = re.compile(r"(?:^|[\s;&|(])make\s+([a-z][\w-]*)")
MAKE_FENCED = re.compile(r"(?:^\s*(?:sudo\s+)?(?:[A-Z_][A-Z0-9_]*=\S+\s+)*|[;&|]\s*)make\s+([a-z][\w-]*)")


def mentions(pages: list[Path] = PAGES) -> dict[str, list[tuple[Mention, str]]]:
    """kind -> [(where, name)] for every name of each kind the pages mention in code."""
    found: dict[str, list[tuple[Mention, str]]] = {"setting": [], "route": [], "metric": [], "make": []}
    for page in pages:
        spans, fenced = code_of(page.read_text())
        for span in spans:
            where = Mention(page.name, span)
            if match := SETTING.match(span.strip()):
                found["setting"].append((where, match.group(1)))
            if match := ROUTE.match(span):
                found["route"].append((where, f"{match.group(1)} {match.group(2)}"))
            elif match := BARE_ROUTE.match(span):
                found["route"].append((where, match.group(1)))
            found["make"] += [(where, target) for target in MAKE_INLINE.findall(span)]
        for line in fenced:
            found["make"] += [(Mention(page.name, line.strip()), target) for target in MAKE_FENCED.findall(line)]
        for chunk in spans + fenced:
            found["metric"] += [
                (Mention(page.name, chunk.strip()), name) for name in METRIC.findall(chunk)
                if name not in volume_names() and name not in PACKAGES
            ]
    return found


# --- what the code has --------------------------------------------------------------------------------------------


def _files(*patterns: str) -> Iterator[Path]:
    for pattern in patterns:
        yield from sorted(path for path in ROOT.glob(pattern) if "/.venv/" not in str(path) and path.is_file())


@cache
def real_settings() -> frozenset[str]:
    from stack.settings import RunSettings  # scripts/ is on sys.path once the generator is loaded
    from whisper_faster.settings import Settings
    from whisperx_api.settings import WhisperXSettings

    names: set[str] = set(LIBRARY_ENV) | set(NOT_SETTINGS)
    for settings_class in (Settings, WhisperXSettings, RunSettings):
        names |= {env for env, _ in GENERATOR.env_rows(settings_class)}
    # Variables read by the Docker files, scripts, the unit and the Makefile.
    for path in _files("*/docker-compose*.yml", "autostart/docker-compose*.yml", "scripts/*.sh", "Makefile"):
        text = path.read_text()
        names |= set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", text))
        names |= set(re.findall(r"^\s+([A-Z_][A-Z0-9_]*):", text, flags=re.M))  # compose `environment:` keys
        names |= set(re.findall(r"^#\s+([A-Z_][A-Z0-9_]*)\s", text, flags=re.M))  # a script's documented variables
    for path in _files("*/Dockerfile"):
        text = path.read_text()
        names |= set(re.findall(r"^ARG\s+([A-Z_][A-Z0-9_]*)", text, flags=re.M))
        names |= set(re.findall(r"(?:^ENV\s+|\\\n\s+|\s)([A-Z_][A-Z0-9_]*)=", text, flags=re.M))
    for path in _files("autostart/*.service"):
        names |= set(re.findall(r"Environment=([A-Z_][A-Z0-9_]*)=", path.read_text()))
    # The Python code: variables it reads, and its module constants (a page may name one, e.g. JOBS_SCHEMA).
    for path in _files("common/**/*.py", "whisper-faster/**/*.py", "whisperx/**/*.py", "autostart/**/*.py",
                       "scripts/**/*.py", "bench/**/*.py"):
        text = path.read_text()
        names |= set(re.findall(r"(?:environ(?:\.get)?\s*[\[(]|getenv\()\s*[\"']([A-Z_][A-Z0-9_]*)[\"']", text))
        names |= set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=\n]+)?=", text, flags=re.M))
    return frozenset(names)


@cache
def service_apps() -> list[object]:
    from whisper_faster.app import create_app as create_faster
    from whisper_faster.settings import Settings
    from whisperx_api.app import create_app as create_whisperx
    from whisperx_api.settings import WhisperXSettings

    return [create_faster(Settings()), create_whisperx(WhisperXSettings())]


@cache
def proxy_pages() -> frozenset[str]:
    names: set[str] = set()
    for source in PROXY_SOURCES:
        path = ROOT / source
        if path.is_file():
            names |= set(re.findall(r"[\"'b]+(/_autostart/[a-z]+)[\"']", path.read_text()))
    return frozenset(names)


def route_exists(mention: str) -> bool:
    """`METHOD /path` or `/path` (a `{param}` or a concrete value, a query string, a trailing `…` or `*` for "and
    below") against the apps' real routers, HTTP and WebSocket, and the proxy's own pages."""
    method, _, path = mention.rpartition(" ")
    path = path.split("?", 1)[0]
    prefix = path.endswith(("…", "*")) or path.endswith("/")
    path = path.rstrip("…*")
    if path.startswith("/_autostart/"):
        return any(page.startswith(path) if prefix else page == path for page in proxy_pages())
    if prefix:  # "and below": some documented route of an app begins so
        return any(route.startswith(path) for app in service_apps() for route in app.openapi()["paths"])  # type: ignore[attr-defined]
    concrete = re.sub(r"\{[^}]*\}", "x1", path)
    for app in service_apps():
        for kind in ("http", "websocket"):
            scope = {"type": kind, "path": concrete, "method": method or "GET", "root_path": "", "headers": [],
                     "query_string": b""}
            for route in app.routes:  # type: ignore[attr-defined]
                match = route.matches(scope)[0]
                if match is Match.FULL or (match is Match.PARTIAL and not method):
                    return True
    return False


@cache
def real_metrics() -> frozenset[str]:
    names = set(known_metrics())
    names |= {name.removesuffix("_bucket") for name in names if name.endswith("_bucket")}  # a histogram's name
    return frozenset(names)


def metric_exists(name: str) -> bool:
    if name.startswith("*_"):
        return any(real.endswith(name[1:]) for real in real_metrics())
    return name in real_metrics()


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([a-z][\w-]*)\s*:(?!=)", text, flags=re.M))


# --- the checks ---------------------------------------------------------------------------------------------------


def unknown(kind: str, exists: object, pages: list[Path] = PAGES) -> list[str]:
    return sorted({f"{where} ({name})" for where, name in mentions(pages)[kind] if not exists(name)})  # type: ignore[operator]


def test_every_setting_the_guide_names_exists() -> None:
    missing = unknown("setting", lambda name: name in real_settings())
    assert not missing, f"settings the code does not have: {missing}"


def test_every_route_the_guide_names_exists() -> None:
    missing = unknown("route", route_exists)
    assert not missing, f"routes no app has: {missing}"


def test_every_metric_the_guide_names_is_exported() -> None:
    missing = unknown("metric", metric_exists)
    assert not missing, f"metrics no registry has: {missing}"


def test_every_make_target_the_guide_names_exists() -> None:
    missing = unknown("make", lambda name: name in make_targets())
    assert not missing, f"make targets the Makefile does not have: {missing}"


def test_the_checks_find_what_the_pages_name(tmp_path: Path) -> None:
    found = mentions()
    assert {"WHISPER__MODEL", "JOB_RETENTION", "LOG_MAX_SIZE"} <= {name for _, name in found["setting"]}
    assert {"POST /v1/audio/transcriptions", "/health/ready"} <= {name for _, name in found["route"]}
    assert "whisper_faster_realtime_factor" in {name for _, name in found["metric"]}
    assert {"up", "run", "images"} <= {name for _, name in found["make"]}


def test_the_checks_catch_names_the_code_does_not_have(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Set `WHISPER__BEAM_SIZES=5`, call `POST /v1/audio/transcript` and `GET /v1/jobs/{id}/audio`, watch\n"
        "`whisper_faster_jobs_queued_total` and `*_inference_seconds_avg`, run `make backups`:\n\n"
        "```bash\nWHISPER_DOMAIN=example.com make upp\n```\n"
        "Real ones: `WHISPER__MODEL`, `GET /v1/jobs/{id}`, `/v1/realtime?intent=transcription`, "
        "`whisper_faster_jobs{status=\"queued\"}`, `make up`, `/_autostart/status`.\n"
    )
    assert unknown("setting", lambda name: name in real_settings(), [page]) == [
        "page.md: WHISPER__BEAM_SIZES=5 (WHISPER__BEAM_SIZES)"
    ]
    assert [entry.rsplit("(", 1)[1] for entry in unknown("route", route_exists, [page])] == [
        "GET /v1/jobs/{id}/audio)", "POST /v1/audio/transcript)"
    ]
    assert {entry.rsplit("(", 1)[1] for entry in unknown("metric", metric_exists, [page])} == {
        "whisper_faster_jobs_queued_total)", "*_inference_seconds_avg)"
    }
    assert {entry.rsplit("(", 1)[1] for entry in unknown("make", lambda n: n in make_targets(), [page])} == {
        "backups)", "upp)"
    }


# --- the proxy's status document and label values -----------------------------------------------------------------


MONITORING = ROOT / "docs" / "monitoring.md"


def test_every_field_of_the_status_document_is_documented() -> None:
    from autostart.lifecycle import ServiceLifecycle, Timing
    from autostart.status import status_document

    # A lifecycle answers its snapshot without a provider call; the provider is never used here.
    lifecycle = ServiceLifecycle("whisper-faster", provider=None, timing=Timing(180, 900, 64, 0.1))  # type: ignore[arg-type]
    document = status_document({"whisper.example.com": lifecycle})
    fields = document["services"]["whisper.example.com"]  # type: ignore[index]
    page = MONITORING.read_text()
    missing = sorted(field for field in fields if f"`{field}`" not in page)
    assert not missing, f"/_autostart/status fields not in docs/monitoring.md: {missing}"


def _labels(text: str, metric: str, label: str) -> set[str]:
    return set(re.findall(rf'^{metric}\{{[^}}]*{label}="([^"]+)"', text, flags=re.M))


def test_every_stop_reason_and_wake_outcome_is_documented() -> None:
    # Drive the real state machine (fake clock and provider, as tests/autostart does) through an idle stop, a stop
    # from outside, a failed start and a timed-out one, and read the labels off the proxy's real metrics.
    from autostart.lifecycle import ServiceLifecycle, Timing
    from autostart.status import Metrics, Reporter
    from tests.autostart.fakes import FakeClock, FakeProvider

    async def drive() -> str:
        clock = FakeClock()
        provider = FakeProvider(clock, boot_seconds=1)
        lifecycles: dict[str, ServiceLifecycle] = {}
        metrics = Metrics(lifecycles)
        lifecycle = ServiceLifecycle("svc", provider, Timing(5, 10, 8, 0.5), clock=clock, observer=Reporter(metrics))
        lifecycles["svc.example.com"] = lifecycle

        async def request() -> None:
            task = asyncio.ensure_future(lifecycle.acquire())
            await clock.advance(6)
            try:
                await task
            except Exception:  # noqa: BLE001 - failed and timed-out starts are the point
                return
            lifecycle.release()

        await request()                   # ok
        await clock.advance(11)
        await lifecycle.check()           # idle
        await clock.advance(1)
        await request()
        provider.running = False
        await lifecycle.check()           # outside
        provider.start_error = "exited with code 1"
        await request()                   # failed, then the failed start's stop
        await clock.advance(1)
        provider.start_error = None
        provider.boot_seconds = 60
        await request()                   # timeout
        await clock.advance(1)
        return metrics.exposition().decode()

    text = asyncio.run(drive())
    reasons = _labels(text, "autostart_stops_total", "reason")
    outcomes = _labels(text, "autostart_wakes_total", "outcome")
    assert {"idle", "outside", "failed start"} <= reasons, reasons
    assert {"ok", "failed", "timeout"} <= outcomes, outcomes
    table = MONITORING.read_text()
    table = table[table.index("| metric | label | values |"):]
    missing = sorted(value for value in reasons | outcomes if f"`{value}`" not in table)
    assert not missing, f"label values not in docs/monitoring.md's table: {missing}"


# --- make help ----------------------------------------------------------------------------------------------------


def test_make_help_lists_every_target_with_its_description() -> None:
    text = (ROOT / "Makefile").read_text()
    undescribed = sorted(
        target for target in make_targets() if not re.search(rf"^{re.escape(target)}\s*:[^\n]*## \S", text, flags=re.M)
    )
    assert not undescribed, f"Makefile targets without a `## description`: {undescribed}"
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert listed == set(make_targets()), f"make help lists {sorted(listed)}, the Makefile has {sorted(make_targets())}"


@pytest.mark.parametrize("target", ["help", "up"])
def test_make_help_shows_the_description(target: str) -> None:
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    line = next(line for line in result.stdout.splitlines() if line.split()[0] == target)
    assert len(line.split(None, 1)) == 2
