"""`make up` for a test: the real script against the host's own Nginx, as a stock Debian server has it.

Nginx is the machine's: `/etc/nginx` with Debian's `nginx.conf` untouched (`user www-data;`, `include
/etc/nginx/conf.d/*.conf` and `sites-enabled/*`, its default site on port 80). `make up` writes its files there
(`conf.d/whisper-platform.conf`, `snippets/`, the sites, `whisper.htpasswd`, the self-signed stand-in under
`whisper-selfsigned/`), checks them as `www-data`, and starts or reloads that Nginx. The ACME folder is the default
`/var/www/letsencrypt`. Only what a test on one machine must move is moved: the sites listen on free loopback ports
(NGINX_HTTPS_LISTEN / NGINX_HTTP_LISTEN) instead of 443/80, and the proxy's config, credentials, pid file and access
logs go to the test's temp folder (root's, which is what they are on a server too). No systemd here, so the proxy
runs as the background process `make up` installs by default.

The test refuses to run when the host already has a deployment of this platform in /etc/nginx, and afterwards removes
every file `make up` wrote there and stops the Nginx it started.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from scripts.stack.nginx_config import nginx_binary
from tests.containers.docker_cli import CONTAINERS, docker, inspect
from tests.stack.harness import LoopbackTransport
from tests.support import ROOT, fixture_path, free_port

DOMAIN = "localhost"
HOSTS = {"whisper-faster": f"whisper.{DOMAIN}", "whisperx": f"whisperx.{DOMAIN}"}
USER, PASSWORD = "deploy-tester", "a-long-test-password-1234"
NGINX_DIR = Path("/etc/nginx")
NGINX_CONF = NGINX_DIR / "nginx.conf"
ACME_WEBROOT = Path("/var/www/letsencrypt")
# Everything `make up` adds to /etc/nginx (see scripts/stack/deploy.py); the test removes it again.
MAKE_UP_FILES = (
    "conf.d/whisper-platform.conf",
    "snippets/tls.conf",
    "snippets/basic-auth.conf",
    "snippets/json-errors.conf",
    "snippets/response-headers.conf",
    *(f"sites-available/{host}.conf" for host in HOSTS.values()),
    *(f"sites-enabled/{host}.conf" for host in HOSTS.values()),
    "whisper.htpasswd",
    "whisper-selfsigned",
)


def require_stock_nginx() -> None:
    """The host's Nginx as Debian ships it, and no deployment of ours in it."""
    if nginx_binary() is None or not NGINX_CONF.is_file():
        pytest.skip("the host's Nginx (apt-get install nginx): /etc/nginx/nginx.conf is missing")
    if os.geteuid() != 0:
        pytest.skip("make up writes into /etc/nginx: run the deployment tests as root (CI does)")
    present = [name for name in MAKE_UP_FILES if (NGINX_DIR / name).exists() or (NGINX_DIR / name).is_symlink()]
    if present:
        pytest.fail(f"/etc/nginx already holds a deployment of this platform ({', '.join(present)}): not touching it")


def nginx_running() -> bool:
    pidfile = Path("/run/nginx.pid")
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


@dataclass
class Deployment:
    root: Path
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    service_ports: dict[str, int] = field(
        default_factory=lambda: {"whisper-faster": free_port(), "whisperx": free_port()}
    )
    # Long enough to check a woken container's health and hardening before the proxy stops it again.
    idle_timeout: int = 45
    extra_env: dict[str, str] = field(default_factory=dict)
    nginx_dir: Path = NGINX_DIR
    nginx_was_running: bool = field(default_factory=nginx_running)
    acme_existed: bool = field(default_factory=ACME_WEBROOT.exists)

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def credentials_store(self) -> Path:
        return self.root / "etc" / "credentials"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "WHISPER_DOMAIN": DOMAIN,
            "WHISPER_USER": USER,
            "WHISPER_PASSWORD": PASSWORD,
            "WHISPER_ETC": str(self.root / "etc"),
            "WHISPER_STATE_DIR": str(self.state_dir),
            "NGINX_DIR": str(self.nginx_dir),
            "NGINX_HTTPS_LISTEN": f"127.0.0.1:{self.https_port}",
            "NGINX_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "NGINX_LOG_DIR": str(self.root / "logs"),
            "AUTOSTART_LISTEN": f"127.0.0.1:{self.proxy_port}",
            "WHISPER_FASTER_PORT": str(self.service_ports["whisper-faster"]),
            "WHISPERX_PORT": str(self.service_ports["whisperx"]),
            "WHISPER_IDLE_TIMEOUT": str(self.idle_timeout),
            # Two cores are shared with the rest of the suite; the services' model defaults stay as shipped.
            "WHISPER__CPU_THREADS": "2",
            **self.extra_env,
        }

    def make(
        self, target: str, env: dict[str, str] | None = None, timeout: float = 1500
    ) -> subprocess.CompletedProcess[str]:
        # -o: the suite runs after `make install`; a pyproject.toml touched since must not reinstall .venv mid-test.
        return subprocess.run(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "-o", ".venv/.installed-deploy", target],
            cwd=ROOT, env=env or self.env(), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def script(self, name: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [shutil.which("bash") or "/bin/bash", str(ROOT / "scripts" / name)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def url(self, service: str, path: str) -> str:
        return f"https://{HOSTS[service]}:{self.https_port}{path}"

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for host in HOSTS.values():
            context.load_verify_locations(cafile=str(self.nginx_dir / "whisper-selfsigned" / f"{host}.pem"))
        return context

    def client(self, timeout: float = 600, auth: tuple[str, str] | None = (USER, PASSWORD)) -> httpx.Client:
        return httpx.Client(transport=LoopbackTransport(verify=self.ssl_context()), auth=auth, timeout=timeout)

    def proxy_states(self) -> dict[str, str]:
        return {host: str(s["state"]) for host, s in self.proxy_status().items()}

    def proxy_status(self) -> dict[str, dict]:
        status = httpx.get(f"http://127.0.0.1:{self.proxy_port}/_autostart/status", timeout=5).json()
        return status["services"]

    def projects(self) -> set[str]:
        """The compose projects of our containers (compose v1 and v2 spell a folder's project name differently)."""
        found = set()
        for container in CONTAINERS.values():
            info = inspect(container)
            if info:
                found.add(info["Config"]["Labels"].get("com.docker.compose.project", ""))
        return found - {""}

    def cleanup(self, projects: set[str]) -> None:
        """Whatever a test left: the proxy, Nginx as it was, containers, networks, the volumes (make down keeps them)
        and every file make up wrote into /etc/nginx."""
        self.make("down")
        pidfile = self.state_dir / "autostart.pid"
        if pidfile.is_file():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        if self.nginx_dir == NGINX_DIR:
            for name in MAKE_UP_FILES:
                path = NGINX_DIR / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            if not self.acme_existed and ACME_WEBROOT.is_dir():
                shutil.rmtree(ACME_WEBROOT)
            nginx = nginx_binary()
            if nginx and nginx_running():
                action = "reload" if self.nginx_was_running else "quit"
                subprocess.run([nginx, "-c", str(NGINX_CONF), "-s", action], capture_output=True, timeout=30)
        for container in CONTAINERS.values():
            docker("rm", "-f", container, check=False)
        for project in projects:
            for kind in ("network", "volume"):
                names = docker(kind, "ls", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout
                for name in names.split():
                    docker(kind, "rm", name, check=False)


# --- one deployment at a time on this engine and this Nginx (the containers and the sites have fixed names) ----------

LOCK_PATH = Path(tempfile.gettempdir()) / "whisper-platform-deployment.lock"


@contextmanager
def exclusive_deployment(wait: float = 2400) -> Iterator[None]:
    """Wait until no other test session deploys on this host (a lock file), and until what another session's
    deployment left (our containers, our Nginx files) is gone; then hold the lock for the caller's deployment.
    Sessions whose tests do not take the lock are still noticed by what they leave, within `wait` seconds."""
    with LOCK_PATH.open("a+") as lock:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session held {LOCK_PATH} for {wait:.0f} s")
                time.sleep(5)
        try:
            while [c for c in CONTAINERS.values() if inspect(c) is not None] or any(
                    (NGINX_DIR / name).exists() or (NGINX_DIR / name).is_symlink() for name in MAKE_UP_FILES):
                if time.monotonic() > deadline:
                    pytest.fail("another deployment of this platform (containers faster-whisper/whisperx or its Nginx "
                                f"files) stayed on this host for {wait:.0f} s: not touching it")
                time.sleep(10)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- jobs and webhooks through the deployment -------------------------------------------------------------------------

FINISHED = {"succeeded", "failed", "canceled"}


def host_address() -> str | None:
    """An address of this host that is not on a Docker bridge (the containers reach a receiver there, also after their
    compose network is re-created)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields[1] == "lo" or fields[1].startswith(("br-", "docker", "veth")):
            continue
        return fields[3].split("/")[0]
    return None


@dataclass
class Receiver:
    """A webhook receiver: each delivery as (path, webhook-id)."""

    address: str
    port: int
    hits: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://{self.address}:{self.port}{path}"

    def deliveries(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.hits)

    def paths(self) -> list[str]:
        return [path for path, _ in self.deliveries()]


@contextmanager
def webhook_receiver(address: str) -> Iterator[Receiver]:
    receiver = Receiver(address, free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length") or 0))
            with receiver.lock:
                receiver.hits.append((self.path, self.headers.get("webhook-id", "")))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", receiver.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def long_recording(folder: Path, repeats: int = 10) -> Path:
    """dev00.wav (30 s of a meeting) `repeats` times over, as 16 kHz PCM16: a job that runs for a while."""
    from faster_whisper.audio import decode_audio
    import numpy as np

    samples = decode_audio(str(fixture_path("dev00.wav")), sampling_rate=16_000)
    pcm = (np.clip(np.tile(samples, repeats), -1, 1) * 32767).astype("<i2").tobytes()
    path = folder / f"dev00-x{repeats}.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(pcm)
    return path


def submit_job(http: httpx.Client, deployment: Deployment, service: str, audio: str | Path = "jfk.flac",
               webhook: str | None = None) -> str:
    data = {"webhook_url": webhook} if webhook else {}
    path = audio if isinstance(audio, Path) else fixture_path(audio)
    with path.open("rb") as handle:
        answer = http.post(deployment.url(service, "/v1/jobs"), files={"file": (path.name, handle)}, data=data)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def job_views(http: httpx.Client, deployment: Deployment, service: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    after = None
    while True:
        page = http.get(deployment.url(service, "/v1/jobs"), params={"limit": "100", **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        found.update({job["id"]: job for job in body["data"]})
        if not body["has_more"]:
            return found
        after = body["last_id"]


def wait_for_jobs(http: httpx.Client, deployment: Deployment, service: str, ids: set[str], timeout: float,
                  delivered: bool = False) -> dict[str, dict]:
    """The jobs once each has finished (and, with `delivered`, its webhook delivered: each job must have a webhook).
    The list leaves the deliveries out, so with `delivered` each finished job is read on its own."""
    deadline = time.monotonic() + timeout
    while True:
        current = {job_id: job for job_id, job in job_views(http, deployment, service).items() if job_id in ids}
        if delivered:
            for job_id, job in current.items():
                if job["status"] in FINISHED:
                    answer = http.get(deployment.url(service, f"/v1/jobs/{job_id}"))
                    assert answer.status_code == 200, answer.text
                    current[job_id] = answer.json()
        settled = [job for job in current.values() if job["status"] in FINISHED
                   and (not delivered or (job["webhook"]["deliveries"]
                                          and all(d["status"] == "delivered" for d in job["webhook"]["deliveries"])))]
        if len(current) == len(ids) == len(settled):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"{service} jobs not settled in {timeout:.0f} s: "
                                 f"{ {k: (v['status'], v['webhook']['deliveries']) for k, v in current.items()} }")
        time.sleep(2)


def proxy_command(deployment: Deployment) -> list[str]:
    """The proxy as `make up` runs it without systemd (scripts/compose-up.sh, start_background)."""
    state = deployment.state_dir
    return [str(ROOT / ".venv" / "bin" / "python"), "-m", "autostart", "--config", str(deployment.root / "etc" /
            "autostart.json"), "--listen", f"127.0.0.1:{deployment.proxy_port}", "--log-file",
            str(state / "autostart.log"), "--pid-file", str(state / "autostart.pid")]


def proxy_events(deployment: Deployment) -> list[dict]:
    """The proxy's JSON log lines, oldest first, across its rotated files."""
    found = []
    files = sorted(deployment.state_dir.glob("autostart.log*"), key=lambda p: p.name, reverse=True)
    for path in files:  # autostart.log.2, .1, then the current one
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
    return found
