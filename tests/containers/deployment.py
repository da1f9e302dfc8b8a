"""`make up` for a test: the real script, with every host path in a temp dir and every port a free one.

Nginx gets its own nginx.conf (Debian's layout: conf.d/ and sites-enabled/ beside it) in NGINX_DIR; `make up` writes
the sites there, checks it with `nginx -t -c` and starts Nginx with it. No systemd here, so the proxy runs as the
background process `make up` installs by default.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from scripts.stack.nginx_config import nginx_binary, render
from tests.containers.docker_cli import CONTAINERS, docker, inspect
from tests.stack.harness import LoopbackTransport
from tests.support import ROOT, free_port

DOMAIN = "localhost"
HOSTS = {"whisper-faster": f"whisper.{DOMAIN}", "whisperx": f"whisperx.{DOMAIN}"}
USER, PASSWORD = "deploy-tester", "a-long-test-password-1234"


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

    @property
    def nginx_dir(self) -> Path:
        return self.root / "etc-nginx"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

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
            "ACME_WEBROOT": str(self.root / "acme"),
            "AUTOSTART_LISTEN": f"127.0.0.1:{self.proxy_port}",
            "WHISPER_FASTER_PORT": str(self.service_ports["whisper-faster"]),
            "WHISPERX_PORT": str(self.service_ports["whisperx"]),
            "WHISPER_IDLE_TIMEOUT": str(self.idle_timeout),
            # The embedded model: no download (whisperx's compose default, base, would need the Hugging Face Hub).
            "WHISPER__MODEL": "tiny.en",
            "HF_HUB_OFFLINE": "1",
            "WHISPER__CPU_THREADS": "2",
            **self.extra_env,
        }

    def write_nginx_conf(self) -> Path:
        """An nginx.conf as Debian ships it (http {} including conf.d/*.conf and sites-enabled/*), on temp paths."""
        run_dir = self.root / "nginx-run"
        for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "logs"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.nginx_dir.mkdir(parents=True, exist_ok=True)
        conf = self.nginx_dir / "nginx.conf"
        mime_types = Path("/etc/nginx/mime.types")
        conf.write_text(
            render(
                (ROOT / "nginx" / "nginx.conf.template").read_text(),
                {
                    # As root, workers would drop to `nobody`, who cannot read the 0600 htpasswd in a temp dir.
                    "user_directive": "user root root;" if os.geteuid() == 0 else "",
                    "run_dir": str(run_dir),
                    "error_log": str(run_dir / "logs" / "error.log"),
                    "access_log": str(run_dir / "logs" / "access.log"),
                    "mime_types": str(mime_types) if mime_types.is_file() else "mime.types",
                },
            )
        )
        return conf

    def make(
        self, target: str, env: dict[str, str] | None = None, timeout: float = 1500
    ) -> subprocess.CompletedProcess[str]:
        # -o: the suite runs after `make install`; a pyproject.toml touched since must not reinstall .venv mid-test.
        return subprocess.run(
            ["make", "--no-print-directory", "-o", ".venv/.installed", target],
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

    def client(self, timeout: float = 600) -> httpx.Client:
        return httpx.Client(
            transport=LoopbackTransport(verify=self.ssl_context()), auth=(USER, PASSWORD), timeout=timeout
        )

    def proxy_states(self) -> dict[str, str]:
        status = httpx.get(f"http://127.0.0.1:{self.proxy_port}/_autostart/status", timeout=5).json()
        return {host: str(s["state"]) for host, s in status["services"].items()}

    def projects(self) -> set[str]:
        """The compose projects of our containers (compose v1 and v2 spell a folder's project name differently)."""
        found = set()
        for container in CONTAINERS.values():
            info = inspect(container)
            if info:
                found.add(info["Config"]["Labels"].get("com.docker.compose.project", ""))
        return found - {""}

    def cleanup(self, projects: set[str]) -> None:
        """Whatever a failed test left: the proxy, Nginx, containers, networks, and the volumes (make down keeps them)."""
        self.make("down")
        pidfile = self.state_dir / "autostart.pid"
        if pidfile.is_file():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        conf = self.nginx_dir / "nginx.conf"
        nginx = nginx_binary()
        if conf.is_file() and nginx:
            subprocess.run([nginx, "-c", str(conf), "-s", "quit"], capture_output=True, timeout=30)
        for container in CONTAINERS.values():
            docker("rm", "-f", container, check=False)
        for project in projects:
            for kind in ("network", "volume"):
                names = docker(kind, "ls", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout
                for name in names.split():
                    docker(kind, "rm", name, check=False)
