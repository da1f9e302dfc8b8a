"""Real things for the proxy tests: the proxy as a subprocess, a Docker Engine, a tiny busybox image."""
from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ARTIFACTS, ROOT, free_port, require, server_process

UNIT = ROOT / "autostart" / "docker-autostart.service"
SOCKET_UNIT = ROOT / "autostart" / "docker-autostart.socket"
BUSYBOX = Path("/bin/busybox")
IMAGE = "autostart-test:busybox"
IMAGE_HEALTHCHECK = "autostart-test:busybox-healthcheck"
# PORT: where httpd listens (host network); DELAY: seconds before it starts listening (a slow model load).
IMAGE_CMD = 'CMD ["/bin/sh", "-c", "sleep ${DELAY:-0}; exec /bin/busybox httpd -f -p ${PORT:-80} -h /www"]'
HEALTHCHECK = (
    "HEALTHCHECK --interval=1s --timeout=2s --retries=1 "
    "CMD /bin/busybox wget -q -O /dev/null http://127.0.0.1:${PORT:-80}/status.txt || exit 1"
)
SLOW_CGI = """#!/bin/sh
sleep "${QUERY_STRING:-1}"
printf 'Content-Type: text/plain\\r\\n\\r\\nslept %s\\n' "$QUERY_STRING"
"""


@dataclass
class ProxyHandle:
    port: int
    pid: int
    config_path: Path
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, host: str, path: str = "/", **kwargs: Any) -> httpx.Response:
        headers = {"Host": host, **kwargs.pop("headers", {})}
        return httpx.get(self.base + path, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)

    def status(self) -> dict[str, Any]:
        return httpx.get(f"{self.base}/_autostart/status", timeout=5).json()["services"]

    def metrics(self) -> str:
        return httpx.get(f"{self.base}/_autostart/metrics", timeout=5).text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def run_proxy(config: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None,
              name: str = "autostart") -> Iterator[ProxyHandle]:
    port = free_port()
    config_path = tmp_path / f"{name}-{port}.json"
    config_path.write_text(json.dumps(config))
    log_name = f"autostart-{name}-{port}"
    with server_process(
        [sys.executable, "-m", "autostart", "--config", str(config_path), "--listen", f"127.0.0.1:{port}"],
        health_url=f"http://127.0.0.1:{port}/_autostart/health", env=env, timeout=30, log_name=log_name,
    ) as proc:
        yield ProxyHandle(port, proc.pid, config_path, ARTIFACTS / f"{log_name}.log")


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


# -- Docker --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client():
    available = shutil.which("dockerd") is not None and shutil.which("docker") is not None
    require(available, "Docker Engine (apt-get install docker.io)")
    started = subprocess.run([str(ROOT / "scripts" / "ensure-dockerd.sh"), "90"], capture_output=True, text=True)
    require(started.returncode == 0, f"a running Docker Engine: {started.stderr.strip()[-500:]}")
    import docker

    client = docker.from_env()
    yield client
    client.close()


def _rootfs_tar(destination: Path) -> Path:
    root = destination / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "bin" / "sleep").symlink_to("busybox")
    www = root / "www"
    (www / "cgi-bin").mkdir(parents=True)
    (www / "health").write_text("ok\n")
    (www / "status.txt").write_text("healthy\n")
    (www / "index.html").write_text("hello from the busybox backend\n")
    slow = www / "cgi-bin" / "slow"
    slow.write_text(SLOW_CGI)
    slow.chmod(0o755)
    (root / "tmp").mkdir()
    archive = destination / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    return archive


@pytest.fixture(scope="session")
def test_images(docker_client, tmp_path_factory) -> dict[str, str]:
    """Two images from Debian's busybox-static (no registry): plain, and one with a Docker HEALTHCHECK.
    Built once; a later session reuses them (the vfs storage driver makes builds slow)."""
    require(BUSYBOX.is_file(), "busybox-static (apt-get install busybox-static)")
    import docker.errors

    wanted = {IMAGE: [IMAGE_CMD], IMAGE_HEALTHCHECK: [IMAGE_CMD, HEALTHCHECK]}
    archive: Path | None = None
    for tag, changes in wanted.items():
        try:
            docker_client.images.get(tag)
            continue
        except docker.errors.ImageNotFound:
            pass
        archive = archive or _rootfs_tar(tmp_path_factory.mktemp("busybox"))
        args = ["docker", "import"]
        for change in changes:
            args += ["--change", change]
        subprocess.run([*args, str(archive), tag], check=True, capture_output=True)
    return {"plain": IMAGE, "healthcheck": IMAGE_HEALTHCHECK}


@pytest.fixture
def make_container(docker_client, test_images) -> Iterator[Callable[..., str]]:
    """Create (not start) a busybox httpd container on the host network; removed after the test."""
    created: list[str] = []

    def create(port: int, *, delay: float = 0, healthcheck: bool = False, name: str | None = None,
               command: list[str] | None = None) -> str:
        name = name or f"autostart-test-{uuid.uuid4().hex[:8]}"
        docker_client.containers.create(
            test_images["healthcheck" if healthcheck else "plain"], command=command, name=name,
            network_mode="host", environment={"PORT": str(port), "DELAY": str(delay)},
        )
        created.append(name)
        return name

    yield create
    for name in created:
        try:
            docker_client.containers.get(name).remove(force=True)
        except Exception:
            pass


def start_events(docker_client, container: str, since: float) -> int:
    """How many times Docker started `container` since `since` (from the Engine's own event log)."""
    events = docker_client.events(
        since=int(since) - 1, until=int(time.time()) + 1, filters={"container": container, "event": "start"},
        decode=True,
    )
    return sum(1 for event in events if event.get("timeNano", 0) >= since * 1e9)


def docker_service(host: str, container: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"services": {host: {"name": host.split(".")[0], "proxyPort": port, "containers": [container],
                                "stopTimeout": 1, **extra}},
            "checkInterval": 0.5}


# -- the command provider with the uvicorn test backend ----------------------------------------------


def backend_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "tests.autostart.backend_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log"]


def command_service(port: int, **extra: Any) -> dict[str, Any]:
    return {"name": "backend", "provider": "command", "proxyPort": port, "startCommand": backend_command(port),
            "cwd": str(ROOT), "stopTimeout": 3, **extra}


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pids_in(path: Path) -> list[int]:
    """The pids a backend wrote to its BACKEND_PID_FILE, one per process started."""
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def log_events(proxy: ProxyHandle) -> list[dict[str, Any]]:
    lines = []
    for line in proxy.log().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


# -- reloading the config, as `systemctl reload` does -----------------------------------------------------


def unit_service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def systemctl_reload(proxy: ProxyHandle) -> None:
    """What `systemctl reload docker-autostart` runs: the unit's ExecReload, $MAINPID being the proxy."""
    command = unit_service_section()["ExecReload"].replace("$MAINPID", str(proxy.pid))
    subprocess.run(shlex.split(command), check=True, timeout=10)


def reload_with(proxy: ProxyHandle, config: dict[str, Any] | str) -> dict[str, Any]:
    """Write the config file, reload, and return the proxy's log line about it."""
    before = len(_reload_events(proxy))
    proxy.config_path.write_text(config if isinstance(config, str) else json.dumps(config))
    systemctl_reload(proxy)
    wait_until(lambda: len(_reload_events(proxy)) > before, 20, "the reload's log line")
    events = _reload_events(proxy)
    assert len(events) == before + 1, events[before:]
    return events[-1]


def _reload_events(proxy: ProxyHandle) -> list[dict[str, Any]]:
    return [e for e in log_events(proxy) if str(e.get("event", "")).startswith("config reload")]
