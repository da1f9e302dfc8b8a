"""Renders the nginx/ templates: for a production host (/etc/nginx layout) or for a local, unprivileged run."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .nginx_host import Worker, check_readable, secure, worker_of

TEMPLATES = Path(__file__).resolve().parents[2] / "nginx"
PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# Values end up inside nginx directives; anything that could end a directive or start a variable is refused.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9._:/@\[\]+=-]+$")
SERVER_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
BODY_SIZE = re.compile(r"^[0-9]+[kKmMgG]?$")
# `listen ... http2` became the `http2 on;` directive in nginx 1.25.1.
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)


class NginxConfigError(ValueError):
    """A value that cannot be rendered safely into the nginx configuration."""


@dataclass(frozen=True)
class Site:
    """One hostname and its certificate."""

    server_name: str
    ssl_certificate: Path
    ssl_certificate_key: Path

    @classmethod
    def letsencrypt(cls, server_name: str) -> Site:
        live = Path("/etc/letsencrypt/live") / server_name
        return cls(server_name, live / "fullchain.pem", live / "privkey.pem")


@dataclass(frozen=True)
class NginxConfig:
    """Everything the templates need; the defaults are the production ones."""

    sites: Sequence[Site]
    proxy_address: str = "127.0.0.1:8890"
    cors_origins: Sequence[str] = ()
    htpasswd_file: Path = Path("/etc/nginx/whisper.htpasswd")
    acme_webroot: Path = Path("/var/www/letsencrypt")
    max_body_size: str = "500M"
    read_timeout_s: int = 600
    http_listen: Sequence[str] = ("80", "[::]:80")
    https_listen: Sequence[str] = ("443", "[::]:443")
    https_port: int = 443
    auth_realm: str = "Whisper"
    nginx_version: tuple[int, ...] = (1, 22, 1)
    # <dir>/<host>.access.log, one JSON line per request
    access_log_dir: Path = Path("/var/log/nginx")
    # Requests per second one client address may make, sustained (0 = no limit); `rate_limit_burst` more may come
    # at once. Every request with credentials costs a password-hash check, so this bounds both guessing and CPU.
    rate_limit: int = 10
    rate_limit_burst: int = 60

    def __post_init__(self) -> None:
        if not self.sites:
            raise NginxConfigError("at least one site (hostname) is needed")
        for site in self.sites:
            if not SERVER_NAME.match(site.server_name):
                raise NginxConfigError(f"not a valid server name: {site.server_name!r}")
            _safe_path(site.ssl_certificate)
            _safe_path(site.ssl_certificate_key)
        for origin in self.cors_origins:
            if not ORIGIN.match(origin):
                raise NginxConfigError(f"CORS origin must look like https://portal.example.com, got {origin!r}")
        if not BODY_SIZE.match(self.max_body_size):
            raise NginxConfigError(f"max body size must look like 500M, got {self.max_body_size!r}")
        for value in (self.proxy_address, *self.http_listen, *self.https_listen):
            if not SAFE_VALUE.match(value):
                raise NginxConfigError(f"unsafe value for nginx: {value!r}")
        if not re.match(r"^[A-Za-z0-9 _.-]+$", self.auth_realm):
            raise NginxConfigError(f"unsafe auth realm: {self.auth_realm!r}")
        if self.rate_limit < 0 or self.rate_limit > 100_000:
            raise NginxConfigError(f"rate limit must be 0 (off) to 100000 requests per second, got {self.rate_limit}")
        if not 0 <= self.rate_limit_burst <= 100_000:
            raise NginxConfigError(f"rate limit burst must be 0 to 100000 requests, got {self.rate_limit_burst}")
        _safe_path(self.htpasswd_file)
        _safe_path(self.acme_webroot)
        _safe_path(self.access_log_dir)


def readable_size(size: str) -> str:
    """An nginx size ("500M", "1g", "1024k", "1048576") as people read it; nginx's units are powers of 1024."""
    unit = size[-1].lower()
    if unit in "kmg":
        return f"{size[:-1]} {unit.upper()}iB"
    return f"{size} bytes"


# Statuses nginx uses internally for a bad request and turns into 400 on the wire: a header too large (494), a client
# certificate problem (495, 496), plain HTTP on the HTTPS port (497). They share the 400 body.
BAD_REQUEST_ALIASES = (494, 495, 496, 497)
# Nginx's own answers that tell the client to come back later carry Retry-After.
RETRY_STATUSES = (429, 503)


def error_bodies(config: NginxConfig) -> dict[int, dict]:
    """The JSON bodies nginx answers with itself, in the OpenAI error shape the services use: every status nginx can
    produce on these sites (answers of the proxy and the services pass through as they are)."""

    def error(message: str, kind: str, code: str, param: str | None = None) -> dict:
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}

    return {
        400: error(
            "Bad request: the gateway could not read this HTTP request (a malformed request line or header, headers "
            "too large, or plain HTTP sent to the HTTPS port).",
            "invalid_request_error",
            "bad_request",
        ),
        403: error("Forbidden by the gateway.", "invalid_request_error", "forbidden"),
        405: error("This method is not allowed here.", "invalid_request_error", "method_not_allowed"),
        408: error(
            "The request body did not arrive in time: the gateway stopped waiting for it.",
            "invalid_request_error",
            "request_timeout",
        ),
        411: error(
            "A Content-Length (or chunked transfer encoding) is required for a request with a body.",
            "invalid_request_error",
            "length_required",
        ),
        414: error("The request URL is too long.", "invalid_request_error", "uri_too_long"),
        500: error(
            "The gateway (Nginx) failed to handle the request: its error log says why (for example a file its worker "
            "user cannot read).",
            "server_error",
            "internal_error",
        ),
        501: error("The gateway does not implement this request (e.g. a transfer encoding).", "server_error",
                   "not_implemented"),
        503: error(
            "The gateway is refusing requests for a moment. Retry after the number of seconds in Retry-After.",
            "server_error",
            "service_unavailable",
        ),
        505: error("This HTTP version is not supported.", "invalid_request_error", "http_version_not_supported"),
        404: error(
            "Not found: the status pages of the auto-start proxy are not served on this site.",
            "invalid_request_error",
            "not_found",
        ),
        401: error(
            "Authentication required: send an API key (Authorization: Bearer <key>) or the user name and password of "
            "this deployment (HTTP basic auth).",
            "authentication_error",
            "unauthorized",
        ),
        413: error(
            f"The upload is larger than this deployment accepts ({readable_size(config.max_body_size)} at most).",
            "invalid_request_error",
            "request_too_large",
            "file",
        ),
        502: error(
            "The gateway could not reach the auto-start proxy; the platform may be restarting. Retry shortly.",
            "server_error",
            "bad_gateway",
        ),
        504: error(
            f"The service did not answer within {config.read_timeout_s} seconds.",
            "server_error",
            "gateway_timeout",
        ),
        429: error(
            f"Too many requests from this address (more than {config.rate_limit} a second, {config.rate_limit_burst} "
            "at once). Retry after the number of seconds in Retry-After.",
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
    }


def rate_limit_directives(config: NginxConfig) -> dict[str, str]:
    """The limit_req lines for the templates; comments only when the limit is off."""
    if config.rate_limit == 0:
        off = "# no per-address rate limit (rate limit 0)"
        return {"limit_req_zone": off, "limit_req": off, "retry_after": "1"}
    return {
        "limit_req_zone": f"limit_req_zone $whisper_limit_key zone=whisper_per_address:10m rate={config.rate_limit}r/s;",
        "limit_req": f"limit_req zone=whisper_per_address burst={config.rate_limit_burst} nodelay;",
        # A request is let through again as soon as one has leaked out of the bucket: 1/rate seconds.
        "retry_after": str(max(1, math.ceil(1 / config.rate_limit))),
    }


# Errors found while reading the request line, before there is a URI: nginx cannot redirect those to a named
# location ("empty URI in redirect to named location", and a 500 instead), so they go to an internal URI.
BEFORE_URI_STATUSES = (400, 414)


def error_pages(config: NginxConfig, retry_after: str) -> str:
    """`error_page` lines and one location per status of error_bodies(): the json-errors snippet's body."""
    lines: list[str] = []
    targets = {
        status: f"/_whisper_error_{status}" if status in BEFORE_URI_STATUSES else f"@whisper_{status}"
        for status in error_bodies(config)
    }
    for status in sorted(targets):
        aliases = " ".join(str(code) for code in BAD_REQUEST_ALIASES) + " " if status == 400 else ""
        lines.append(f"error_page {status} {aliases}{targets[status]};")
    for status, body in sorted(error_bodies(config).items()):
        target = targets[status]
        location = f"location {target} {{" if target.startswith("@") else f"location = {target} {{\n    internal;"
        retry = f"    add_header Retry-After {retry_after} always;\n" if status in RETRY_STATUSES else ""
        lines.append(
            f"\n{location}\n    include snippets/response-headers.conf;\n{retry}"
            f"    default_type application/json;\n    return {status} '{_nginx_quoted(body)}\\n';\n}}"
        )
    return "\n".join(lines)


def render(template: str, values: Mapping[str, str]) -> str:
    """Fills {{ name }} placeholders; a placeholder without a value is an error, not an empty string."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise NginxConfigError(f"template placeholder without a value: {name}")
        return values[name]

    return PLACEHOLDER.sub(substitute, template)


def site_files(config: NginxConfig) -> dict[str, str]:
    """The files a host adds under /etc/nginx: conf.d/, snippets/ and one sites-available/ file per hostname."""
    uses_http2_directive = config.nginx_version >= HTTP2_DIRECTIVE_SINCE
    https_listen_suffix = "ssl" if uses_http2_directive else "ssl http2"
    https_listen = [f"    listen {address} {https_listen_suffix};" for address in config.https_listen]
    if uses_http2_directive:
        https_listen.append("    http2 on;")
    values = {
        "proxy_address": config.proxy_address,
        "auth_realm": config.auth_realm,
        "cors_origin_entries": "\n".join(f'    "{origin}" $http_origin;' for origin in config.cors_origins),
        "htpasswd_file": str(config.htpasswd_file),
        "acme_webroot": str(config.acme_webroot),
        "max_body_size": config.max_body_size,
        "read_timeout": f"{config.read_timeout_s}s",
        "http_listen": "\n".join(f"    listen {address};" for address in config.http_listen),
        "https_listen": "\n".join(https_listen),
        "https_port_suffix": "" if config.https_port == 443 else f":{config.https_port}",
        **rate_limit_directives(config),
        **{f"body_{status}": _nginx_quoted(body) for status, body in error_bodies(config).items()},
    }
    values["error_pages"] = error_pages(config, values["retry_after"])
    files = {
        "conf.d/whisper-platform.conf": render(_template("conf.d/whisper-platform.conf.template"), values),
        "snippets/tls.conf": _template("snippets/tls.conf"),
        "snippets/response-headers.conf": _template("snippets/response-headers.conf"),
        "snippets/basic-auth.conf": render(_template("snippets/basic-auth.conf.template"), values),
        "snippets/json-errors.conf": render(_template("snippets/json-errors.conf.template"), values),
    }
    site_template = _template("sites/whisper-site.conf.template")
    for site in config.sites:
        site_values = {
            **values,
            "server_name": site.server_name,
            "ssl_certificate": str(site.ssl_certificate),
            "ssl_certificate_key": str(site.ssl_certificate_key),
            "access_log": str(config.access_log_dir / f"{site.server_name}.access.log"),
        }
        files[f"sites-available/{site.server_name}.conf"] = render(site_template, site_values)
    return files


SYSTEM_NGINX_CONF = Path("/etc/nginx/nginx.conf")
WORKER_FILES_ROOT = Path("/run/whisper-platform")


def worker_files_dir(run_dir: Path) -> Path:
    """Where a local Nginx's workers find what they read and write at request time (the htpasswd file, the ACME
    folder, request-body temp files).

    Started by a normal user, Nginx's workers are that user: the run folder itself. Started as root, the workers run
    as the host's Nginx worker user (www-data on Debian), exactly as on a server; a run folder under a private home
    (/root, or pytest's 0700 temp folders) is out of their reach, so these files go to a folder of their own under
    /run, root's and readable by the workers' group only."""
    if os.geteuid() != 0:
        return run_dir
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
    return WORKER_FILES_ROOT / f"nginx-{digest}"


def local_worker() -> Worker | None:
    """The worker account of a local Nginx started by this process: None when it is not root (the workers are then
    the invoking user), else the host Nginx's own (`user` in /etc/nginx/nginx.conf, or its compiled-in default)."""
    if os.geteuid() != 0:
        return None
    if SYSTEM_NGINX_CONF.is_file():
        return worker_of(SYSTEM_NGINX_CONF, nginx_binary())
    return worker_of(Path(os.devnull), nginx_binary())


def write_local_tree(config: NginxConfig, conf_dir: Path, run_dir: Path) -> Path:
    """Writes a self-contained nginx tree (nginx.conf + site files) for a local run on loopback; returns nginx.conf.

    As root, the workers run as the host's Nginx worker user (see worker_files_dir): the htpasswd file and the ACME
    folder are made theirs to read (root-owned, their group, 0640/0750) and checked as that user before Nginx starts."""
    worker = local_worker()
    worker_dir = worker_files_dir(run_dir)
    for sub in ("tmp", "acme"):
        (worker_dir / sub).mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    if worker is not None:
        for path in (worker_dir, worker_dir / "tmp", config.htpasswd_file):
            secure(path, worker)
        (worker_dir / "acme").chmod(0o755)  # public content, world-readable like any web root
        check_readable([path for path in (config.htpasswd_file, config.acme_webroot) if path.exists()], worker)
    files = site_files(replace(config, access_log_dir=run_dir / "logs"))
    user_directive = (
        f"user {worker.user} {worker.group};  # {worker.source}" if worker else "# workers run as the invoking user"
    )
    files["nginx.conf"] = render(
        _template("nginx.conf.template"),
        {
            "user_directive": user_directive,
            "run_dir": str(run_dir),
            "temp_dir": str(worker_dir / "tmp"),
            "error_log": str(run_dir / "logs" / "nginx-error.log"),
            "access_log": str(run_dir / "logs" / "nginx-access.log"),
            "mime_types": str(_mime_types()),
        },
    )
    for site in config.sites:
        files[f"sites-enabled/{site.server_name}.conf"] = files[f"sites-available/{site.server_name}.conf"]
    if conf_dir.exists():
        shutil.rmtree(conf_dir)
    write_files(files, conf_dir)
    return conf_dir / "nginx.conf"


def write_files(files: Mapping[str, str], dest: Path) -> list[Path]:
    written = []
    for relative, text in files.items():
        path = dest / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def installed_nginx_version(nginx: str = "nginx") -> tuple[int, ...] | None:
    """The version of the nginx binary (it prints `nginx version: nginx/1.22.1` on stderr), or None."""
    if shutil.which(nginx) is None:
        return None
    result = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    return tuple(int(part) for part in match.groups()) if match else None


def nginx_binary() -> str | None:
    """nginx lives in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("nginx") or next(
        (candidate for candidate in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(candidate, os.X_OK)), None
    )


def _nginx_quoted(body: dict) -> str:
    text = json.dumps(body, separators=(",", ":"))
    if "'" in text or "$" in text or "\\" in text:
        raise NginxConfigError(f"error body cannot be quoted for nginx: {text}")
    return text


def _template(relative: str) -> str:
    return (TEMPLATES / relative).read_text()


def _mime_types() -> Path:
    for candidate in (Path("/etc/nginx/mime.types"), Path("/usr/local/nginx/conf/mime.types")):
        if candidate.is_file():
            return candidate
    raise NginxConfigError("mime.types not found: is nginx installed (apt-get install nginx)?")


def _safe_path(path: Path) -> None:
    if not SAFE_VALUE.match(str(path)):
        raise NginxConfigError(f"path cannot be used in the nginx config (spaces or special characters): {path}")
