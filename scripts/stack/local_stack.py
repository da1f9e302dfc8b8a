"""The whole platform on one machine: Nginx (TLS, basic auth or an API key) → auto-start proxy → services started on
demand.

Nothing needs root or Docker: Nginx runs from a rendered config on unprivileged loopback ports, and the proxy's
`command` provider starts each service as a local uvicorn process when its first request arrives.

Owners: the services read the keys file `<run dir>/api-keys.json` (`python -m whisper_common.keys --file … add NAME`,
picked up without a restart) and trust the edge user Nginx names (X-Whisper-User) from loopback, where only the proxy
connects from on this machine; so each basic-auth user and each key sees only its own jobs and sessions.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from .credentials import Credentials, ensure_credentials, write_htpasswd
from .nginx_config import NginxConfig, Site, installed_nginx_version, nginx_binary, worker_files_dir, write_local_tree
from .nginx_process import start_nginx, stop_nginx
from .processes import Child, start_child, wait_until
from .settings import ROOT, RunSettings
from .tls import ensure_self_signed


def _pyannote_sample() -> Path | None:
    """pyannote.audio (installed with whisperx) ships a 30 s two-speaker recording."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "sample" / "sample.wav"


def sample_audio(two_speakers: bool = False) -> Path:
    """A real recording for the printed examples: the JFK clip of the test fixtures when present."""
    candidates = [_pyannote_sample()]
    if not two_speakers:
        candidates.insert(0, ROOT.parent / "shared" / "fixtures" / "audio" / "jfk.flac")
    return next((path for path in candidates if path is not None and path.is_file()), Path("audio.wav"))


class StackError(RuntimeError):
    """The stack cannot start; the message says what to change."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def cert(self) -> Path:
        return self.root / "tls" / "cert.pem"

    @property
    def key(self) -> Path:
        return self.root / "tls" / "key.pem"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"

    @property
    def worker_files(self) -> Path:
        """What Nginx's workers read: the run folder, or as root a folder under /run (see worker_files_dir)."""
        return worker_files_dir(self.root)

    @property
    def htpasswd(self) -> Path:
        return self.worker_files / "htpasswd"

    @property
    def proxy_config(self) -> Path:
        return self.root / "autostart.json"

    @property
    def api_keys(self) -> Path:
        return self.root / "api-keys.json"

    @property
    def nginx_conf_dir(self) -> Path:
        return self.root / "nginx"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def lock(self) -> Path:
        return self.root / "stack.lock"

    @property
    def openai_example(self) -> Path:
        return self.root / "openai_example.py"


class LocalStack:
    def __init__(self, settings: RunSettings, service_env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        # Added to each service's environment (the services also inherit this process's own).
        self.service_env = dict(service_env or {})
        self.paths = RunPaths(settings.dir.resolve())
        self.credentials: Credentials | None = None
        self.certificate_created = False
        self._lock: IO[str] | None = None
        self._nginx: Child | None = None
        self._proxy: Child | None = None

    @property
    def hostnames(self) -> list[str]:
        return [self.settings.whisper_host, self.settings.whisperx_host]

    def prepare(self) -> None:
        """Certificate, credentials, Nginx and proxy configs; the certificate and credentials are reused."""
        if nginx_binary() is None:
            raise StackError("nginx is not installed: run `make system-deps-runtime` (apt-get install nginx)")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self._check_ports_free()
        self.certificate_created = ensure_self_signed(self.paths.cert, self.paths.key, self.hostnames)
        password = self.settings.password.get_secret_value() if self.settings.password else None
        self.credentials = ensure_credentials(self.paths.credentials, self.settings.user, password)
        write_htpasswd(self.paths.htpasswd, self.credentials)
        self._ensure_keys_file()
        self.paths.proxy_config.write_text(json.dumps(self.proxy_config(), indent=2) + "\n")
        write_local_tree(self.nginx_config(), self.paths.nginx_conf_dir, self.paths.root)
        self.paths.openai_example.write_text(self.openai_example())

    def nginx_config(self) -> NginxConfig:
        return NginxConfig(
            sites=[Site(host, self.paths.cert, self.paths.key) for host in self.hostnames],
            proxy_address=f"127.0.0.1:{self.settings.proxy_port}",
            cors_origins=self.settings.cors_origins,
            htpasswd_file=self.paths.htpasswd,
            acme_webroot=self.paths.worker_files / "acme",
            max_body_size=self.settings.max_body_size,
            rate_limit=self.settings.rate_limit,
            rate_limit_burst=self.settings.rate_limit_burst,
            http_listen=[f"127.0.0.1:{self.settings.http_port}"],
            https_listen=[f"127.0.0.1:{self.settings.https_port}"],
            https_port=self.settings.https_port,
            nginx_version=installed_nginx_version(nginx_binary() or "nginx") or (1, 22, 1),
        )

    def owner_env(self) -> dict[str, str]:
        """Owners for the services: the keys file, and the edge user from the proxy (loopback) trusted."""
        return {"API_KEYS_FILE": str(self.paths.api_keys), "TRUSTED_PROXIES": "127.0.0.1/32,::1/128"}

    def _ensure_keys_file(self) -> None:
        """An empty keys file to start with (the services then accept no key until one is added)."""
        if not self.paths.api_keys.exists():
            self.paths.api_keys.write_text('{"version": 1, "keys": []}\n')
            self.paths.api_keys.chmod(0o600)

    def proxy_config(self) -> dict:
        def service(name: str, module: str, port: int) -> dict:
            return {
                "name": name,
                "provider": "command",
                "proxyPort": port,
                "upstreamHost": "127.0.0.1",
                "blocking": True,
                "healthPath": "/health/ready",
                "startTimeout": self.settings.start_timeout,
                "idleTimeout": self.settings.idle_timeout,
                "startCommand": [sys.executable, "-m", module],
                "cwd": str(ROOT),
                "env": {
                    **self.owner_env(), **self.service_env, "UVICORN_HOST": "127.0.0.1", "UVICORN_PORT": str(port)
                },
            }

        return {
            "services": {
                self.settings.whisper_host: service(
                    "whisper-faster", "whisper_faster", self.settings.whisper_faster_port
                ),
                self.settings.whisperx_host: service("whisperx", "whisperx_api", self.settings.whisperx_port),
            },
            "statusHosts": ["localhost", "127.0.0.1"],
        }

    def start(self) -> None:
        """The proxy first (Nginx has nowhere to send requests without it), then Nginx."""
        proxy_address = f"127.0.0.1:{self.settings.proxy_port}"
        self._proxy = start_child(
            "autostart proxy",
            [sys.executable, "-m", "autostart", "--config", str(self.paths.proxy_config), "--listen", proxy_address],
            self.paths.logs / "autostart.log",
            cwd=ROOT,
        )
        wait_until(self._proxy_answers, 30, "the auto-start proxy", self._proxy)
        self._nginx = start_nginx(
            self.paths.nginx_conf_dir / "nginx.conf",
            self.paths.root,
            [self.settings.http_port, self.settings.https_port],
        )

    def failed_child(self) -> Child | None:
        return next((child for child in (self._nginx, self._proxy) if child is not None and not child.alive()), None)

    def stop(self) -> list[str]:
        """Nginx first (no new requests), then the proxy, which stops the services it woke. Returns problems."""
        if self._nginx is not None:
            stop_nginx(self._nginx)
        if self._proxy is not None:
            # The proxy waits for each service's graceful stop (stopTimeout 10 s) before it exits itself.
            self._proxy.stop(grace_s=40)
        started = self._nginx is not None or self._proxy is not None
        busy = [f"{name}={port}" for name, port in self.settings.ports().items() if started and not _port_free(port)]
        if self.paths.worker_files != self.paths.root:
            shutil.rmtree(self.paths.worker_files, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
        return [f"ports still in use after stop: {', '.join(busy)}"] if busy else []

    def banner(self) -> str:
        assert self.credentials is not None
        settings, paths, credentials = self.settings, self.paths, self.credentials
        whisper_url = f"https://{settings.whisper_host}:{settings.https_port}"
        whisperx_url = f"https://{settings.whisperx_host}:{settings.https_port}"
        if credentials.stored_at is None:
            password_line = "from WHISPER_PASSWORD"
            curl_auth = '"$WHISPER_USER:$WHISPER_PASSWORD"' if settings.user else '"whisper:$WHISPER_PASSWORD"'
        elif credentials.generated:
            password_line = f"{credentials.password}   (generated now, shown once; kept in {paths.credentials}, 0600)"
            curl_auth = f'"$(cat {paths.credentials})"'
        else:
            password_line = f"unchanged, in {paths.credentials} (0600; `cat` it)"
            curl_auth = f'"$(cat {paths.credentials})"'
        audio, conversation = sample_audio(), sample_audio(two_speakers=True)
        resolves = (
            ""
            if _resolves(settings.whisper_host)
            else (
                f"\n  ({settings.whisper_host} does not resolve on this machine: curl handles *.localhost itself; the "
                "Python example connects to 127.0.0.1 and sends the Host header. To use the names everywhere, add "
                f"`127.0.0.1 {' '.join(self.hostnames)}` to /etc/hosts.)"
            )
        )
        return f"""
Whisper platform is up. Ctrl-C stops everything it started.

  whisper-faster  {whisper_url}/docs   OpenAI API under {whisper_url}/v1
  whisperx        {whisperx_url}/docs  POST {whisperx_url}/transcribe

  The services start on their first request (that answer waits for the model to load) and stop again
  after {settings.idle_timeout:g} s without requests.

  user:         {credentials.user}
  password:     {password_line}
  API keys:     {sys.executable} -m whisper_common.keys --file {paths.api_keys} add NAME
                (prints a key once; send it as `Authorization: Bearer <key>`, or the openai client's api_key=)
  certificate:  {paths.cert} (self-signed; trust it, or curl --cacert / -k)
  logs:         {paths.logs}/{resolves}

Try it with curl:

  curl -sS --cacert {paths.cert} -u {curl_auth} -F file=@{audio} -F model=whisper-1 {whisper_url}/v1/audio/transcriptions

  curl -sS --cacert {paths.cert} -u {curl_auth} -F file=@{conversation} -F diarize=true {whisperx_url}/transcribe

Or with the openai client: {sys.executable} {paths.openai_example} [audio file]
which runs:

{self.openai_example()}"""

    def openai_example(self) -> str:
        settings, paths = self.settings, self.paths
        if _resolves(settings.whisper_host):
            base_url, host_header = f"https://{settings.whisper_host}:{settings.https_port}/v1", ""
        else:
            base_url = f"https://127.0.0.1:{settings.https_port}/v1"
            host_header = f', headers={{"Host": "{settings.whisper_host}"}}'
        if self.credentials is not None and self.credentials.stored_at is None:
            auth = 'auth = (os.environ.get("WHISPER_USER", "whisper"), os.environ["WHISPER_PASSWORD"])'
        else:
            auth = f'auth = tuple(pathlib.Path("{paths.credentials}").read_text().strip().split(":", 1))'
        return f'''import os, pathlib, ssl, sys

import httpx
from openai import OpenAI

{auth}
tls = ssl.create_default_context(cafile="{paths.cert}")
client = OpenAI(
    base_url="{base_url}",
    api_key="unused",  # Nginx checks the basic-auth user; the services need no key here
    http_client=httpx.Client(verify=tls, auth=auth, timeout=600{host_header}),
)
audio = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "{sample_audio()}")
with audio.open("rb") as file:
    print(client.audio.transcriptions.create(model="whisper-1", file=file).text)
'''

    def _proxy_answers(self) -> bool:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.settings.proxy_port}/_autostart/status", timeout=1)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _take_lock(self) -> None:
        lock = open(self.paths.lock, "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StackError(f"another `make run` is using {self.paths.root}; stop it first (Ctrl-C there)") from None
        self._lock = lock

    def _check_ports_free(self) -> None:
        busy = [
            f"{port} (set {name} to move it)" for name, port in self.settings.ports().items() if not _port_free(port)
        ]
        if busy:
            raise StackError("ports already in use on 127.0.0.1: " + "; ".join(busy))


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _resolves(hostname: str) -> bool:
    try:
        return bool(socket.getaddrinfo(hostname, None))
    except OSError:
        return False
