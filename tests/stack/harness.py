"""A real Nginx, rendered from nginx/ for free local ports, in front of whatever listens on an upstream port."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from scripts.stack.credentials import Credentials, ensure_credentials, write_htpasswd
from scripts.stack.nginx_config import (
    NginxConfig,
    Site,
    installed_nginx_version,
    nginx_binary,
    worker_files_dir,
    write_local_tree,
)
from scripts.stack.nginx_process import start_nginx, stop_nginx
from scripts.stack.tls import ensure_self_signed
from tests.support import ARTIFACTS, free_port, require

if TYPE_CHECKING:
    from scripts.stack.local_stack import LocalStack

HOSTNAMES = ("whisper.localhost", "whisperx.localhost")
PORTAL_ORIGIN = "https://portal.example.com"


class LoopbackTransport(httpx.HTTPTransport):
    """Sends *.localhost to 127.0.0.1 (not every resolver does), keeping the Host header and the TLS name (SNI)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "localhost" or host.endswith(".localhost"):
            request.extensions = {**request.extensions, "sni_hostname": host}
            request.url = request.url.copy_with(host="127.0.0.1")
        return super().handle_request(request)


@dataclass(frozen=True)
class NginxStack:
    run_dir: Path
    http_port: int
    https_port: int
    cert: Path
    credentials: Credentials
    worker_files: Path  # the htpasswd file and the ACME folder (see worker_files_dir)

    def url(self, path: str = "/", host: str = HOSTNAMES[0]) -> str:
        return f"https://{host}:{self.https_port}{path}"

    def http_url(self, path: str = "/", host: str = HOSTNAMES[0]) -> str:
        return f"http://{host}:{self.http_port}{path}"

    @property
    def auth(self) -> tuple[str, str]:
        return self.credentials.user, self.credentials.password

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def client(self, *, auth: bool | tuple[str, str] = True, timeout: float = 30.0, http2: bool = False,
               source: str | None = None) -> httpx.Client:
        """`auth`: the stack's credentials (True), none (False) or the (user, password) given; `source`: the
        loopback address to connect from (127.0.0.2…), so that tests can act as different clients."""
        return httpx.Client(
            transport=LoopbackTransport(verify=self.ssl_context(), http2=http2, local_address=source),
            auth=(self.auth if auth is True else auth) or None,
            timeout=timeout,
        )


def require_nginx() -> None:
    require(nginx_binary() is not None, "nginx (apt-get install nginx)")


@contextmanager
def running_nginx(
    run_dir: Path,
    upstream_port: int,
    *,
    max_body_size: str = "500M",
    read_timeout_s: int = 600,
    cors_origins: Sequence[str] = (PORTAL_ORIGIN,),
    rate_limit: int = NginxConfig.rate_limit,
    rate_limit_burst: int = NginxConfig.rate_limit_burst,
) -> Iterator[NginxStack]:
    require_nginx()
    cert, key = run_dir / "tls" / "cert.pem", run_dir / "tls" / "key.pem"
    ensure_self_signed(cert, key, HOSTNAMES)
    credentials = ensure_credentials(run_dir / "credentials", "tester", None)
    # As root, Nginx's workers run as the host's worker user (www-data), as on a server: what they read goes where
    # they can reach it (worker_files_dir), 0640 for their group, and is checked as that user before Nginx starts.
    worker_files = worker_files_dir(run_dir)
    worker_files.mkdir(parents=True, exist_ok=True)
    write_htpasswd(worker_files / "htpasswd", credentials)
    http_port, https_port = free_port(), free_port()
    config = NginxConfig(
        sites=[Site(name, cert, key) for name in HOSTNAMES],
        proxy_address=f"127.0.0.1:{upstream_port}",
        cors_origins=cors_origins,
        htpasswd_file=worker_files / "htpasswd",
        acme_webroot=worker_files / "acme",
        max_body_size=max_body_size,
        read_timeout_s=read_timeout_s,
        rate_limit=rate_limit,
        rate_limit_burst=rate_limit_burst,
        http_listen=[f"127.0.0.1:{http_port}"],
        https_listen=[f"127.0.0.1:{https_port}"],
        https_port=https_port,
        nginx_version=installed_nginx_version() or (1, 22, 1),
    )
    conf = write_local_tree(config, run_dir / "nginx", run_dir)
    nginx = start_nginx(conf, run_dir, [http_port, https_port])
    try:
        yield NginxStack(run_dir, http_port, https_port, cert, credentials, worker_files)
    finally:
        stop_nginx(nginx)
        if worker_files != run_dir:
            shutil.rmtree(worker_files, ignore_errors=True)


@contextmanager
def running_local_stack(
    run_dir: Path, service_env: dict[str, str], *, logs_name: str | None = None, **settings: object
) -> Iterator["LocalStack"]:
    """The `make run` stack (Nginx, the proxy, both services started on demand) on free ports in `run_dir`; after it
    stops, its logs are copied to test-artifacts/<logs_name> and any problem stopping it fails the test."""
    from scripts.stack.local_stack import LocalStack
    from scripts.stack.settings import RunSettings

    require_nginx()
    run_settings = RunSettings(
        dir=run_dir, https_port=free_port(), http_port=free_port(), proxy_port=free_port(),
        whisper_faster_port=free_port(), whisperx_port=free_port(), start_timeout=300, **settings,
    )
    local = LocalStack(run_settings, service_env=service_env)
    local.prepare()
    try:
        local.start()
        yield local
    finally:
        problems = local.stop()
        if logs_name is not None:
            shutil.copytree(local.paths.logs, ARTIFACTS / logs_name, dirs_exist_ok=True)
        assert not problems, problems
