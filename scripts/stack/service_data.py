"""The services' data volumes as `make backup` and `make restore` reach them: a helper container of the service's own
image with the service container's volumes (`docker run --volumes-from`), no network, the service's uid, no
capabilities, running `python -m whisper_common.backup` (the release's own database code; nothing on the host).

The container may be running (the backup reads SQLite through the online backup API beside the service) or stopped;
without a container, the data volume is found by its compose labels and mounted alone.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import ROOT

JOBS = "jobs.sqlite3=whisper_common.jobs.schema:JOBS_SCHEMA"
USAGE = "usage.sqlite3=whisper_common.usage.store:USAGE_SCHEMA"
REALTIME = "realtime.sqlite3=whisper_faster.realtime.store:SESSIONS_SCHEMA"
TRANSCRIPTS = "transcripts.sqlite3=whisper_common.transcripts.schema:TRANSCRIPTS_SCHEMA"
APP_USER = "10001:10001"
"""The services' user (the Dockerfiles' `app`), who owns everything in the data volumes."""
DATA_DIR = "/data"
IMAGE_PREFIX = os.environ.get("IMAGE_PREFIX", "whisper-platform")
REVISION_LABEL = "org.opencontainers.image.revision"


@dataclass(frozen=True)
class Service:
    name: str
    """Its folder, compose project and image name."""
    container: str
    queue: str
    stores: tuple[str, ...]
    tag_variable: str

    def store_args(self) -> list[str]:
        args = [item for store in self.stores for item in ("--store", store)]
        return [*args, "--param", f"queue={self.queue}"]

    @property
    def compose_file(self) -> Path:
        return ROOT / self.name / "docker-compose.yml"

    @property
    def image(self) -> str:
        """The image `make up` runs."""
        return f"{IMAGE_PREFIX}/{self.name}:{os.environ.get(self.tag_variable) or 'latest'}"


SERVICES = (
    Service("whisper-faster", "faster-whisper", "whisper_faster", (JOBS, USAGE, REALTIME, TRANSCRIPTS),
            "WHISPER_FASTER_TAG"),
    Service("whisperx", "whisperx", "whisperx", (JOBS, USAGE, TRANSCRIPTS), "WHISPERX_TAG"),
)
BY_NAME = {service.name: service for service in SERVICES}


@dataclass(frozen=True)
class Source:
    """Where a service's data volume is reached from, and with which image."""

    service: Service
    image: str
    mount: tuple[str, ...]
    state: str
    """The container's state (`running`, `exited`, `created`), or `absent` when only its volume exists."""
    volume: str
    postgres: bool
    files: tuple[str, ...] = ()
    """Plain files of the volume archived as they are (`dump --file`): the API keys file when it lies in /data."""

    def describe(self) -> str:
        if self.state == "absent":
            return f"volume {self.volume} (no container)"
        return f"container {self.service.container} ({self.state}), volume {self.volume}"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {args[0]} {args[1] if len(args) > 1 else ''} failed: {result.stderr.strip()[-500:]}")
    return result


def inspect(name: str) -> dict[str, Any] | None:
    result = docker("inspect", "--type", "container", name, check=False)
    return json.loads(result.stdout)[0] if result.returncode == 0 else None


def running(name: str) -> bool:
    info = inspect(name)
    return bool(info and info["State"]["Running"])


def image_revision(image: str) -> str:
    result = docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{REVISION_LABEL}"}}}}', image, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def project_names(service: Service) -> tuple[str, ...]:
    """Compose v2 names the project after the folder (`whisper-faster`), Debian's compose v1 drops the dash."""
    return (service.name, service.name.replace("-", ""))


def data_volume_by_label(service: Service) -> str | None:
    for project in project_names(service):
        found = docker("volume", "ls", "-q", "--filter", "label=com.docker.compose.volume=data",
                       "--filter", f"label=com.docker.compose.project={project}", check=False).stdout.split()
        if found:
            return found[0]
    return None


def _env_file_value(path: Path, key: str) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        name, _, value = line.strip().partition("=")
        if name.strip() == key:
            return value.strip().strip("'\"")
    return ""


def in_data_volume(path: str) -> tuple[str, ...]:
    """`path` (a setting's value inside the container, e.g. API_KEYS_FILE) relative to /data when it lies in the data
    volume; nothing otherwise (a file mounted from the host is the host's to back up)."""
    parts = Path(path).parts
    if len(parts) < 3 or parts[:2] != ("/", DATA_DIR.strip("/")) or any(part in (".", "..") for part in parts):
        return ()
    return ("/".join(parts[2:]),)


def locate(service: Service) -> Source | None:
    info = inspect(service.container)
    if info is not None:
        env = dict(item.split("=", 1) for item in info["Config"]["Env"] if "=" in item)
        volume = next((m.get("Name", "") for m in info["Mounts"] if m["Destination"] == DATA_DIR), "")
        return Source(service, info["Image"], ("--volumes-from", service.container), info["State"]["Status"],
                      volume, bool(env.get("JOBS_DATABASE_URL")), in_data_volume(env.get("API_KEYS_FILE", "")))
    volume = data_volume_by_label(service)
    if volume is None:
        return None
    env_file = ROOT / service.name / ".env"
    postgres = bool(os.environ.get("JOBS_DATABASE_URL") or _env_file_value(env_file, "JOBS_DATABASE_URL"))
    keys = os.environ.get("API_KEYS_FILE") or _env_file_value(env_file, "API_KEYS_FILE")
    return Source(service, service.image, ("--mount", f"type=volume,source={volume},target={DATA_DIR}"), "absent",
                  volume, postgres, in_data_volume(keys))


def helper_name(service: Service, action: str) -> str:
    return f"whisper-{action}-{service.name}-{os.getpid()}"


def helper_command(source: Source, name: str, command: str, *args: str, stdin: bool = False) -> list[str]:
    return [
        "docker", "run", "--rm", "--name", name, "--label", "whisper-platform.helper=backup",
        *(["-i"] if stdin else []), "--network", "none", "--user", APP_USER, "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--no-healthcheck", *source.mount,
        "--entrypoint", "python", source.image, "-m", "whisper_common.backup", command, "--data-dir", DATA_DIR, *args,
    ]  # fmt: skip


def remove_helper(name: str) -> None:
    """Our own helper container, when its client went away before it ended."""
    docker("rm", "-f", name, check=False)


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def compose(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_command(), "--project-directory", str(ROOT / service.name), "-f", str(service.compose_file), *args],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
