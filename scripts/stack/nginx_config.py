"""Renders the nginx/ templates: for a production host (/etc/nginx layout) or for a local, unprivileged run."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

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


def error_bodies(config: NginxConfig) -> dict[int, dict]:
    """The JSON bodies nginx answers with itself, in the OpenAI error shape the services use."""

    def error(message: str, kind: str, code: str, param: str | None = None) -> dict:
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}

    return {
        404: error(
            "Not found: the status pages of the auto-start proxy are not served on this site.",
            "invalid_request_error",
            "not_found",
        ),
        401: error(
            "Authentication required: send the user name and password of this deployment (HTTP basic auth).",
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


def write_local_tree(config: NginxConfig, conf_dir: Path, run_dir: Path) -> Path:
    """Writes a self-contained nginx tree (nginx.conf + site files) for an unprivileged run; returns nginx.conf."""
    for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "logs"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    files = site_files(replace(config, access_log_dir=run_dir / "logs"))
    # As root, workers would otherwise drop to `nobody`, who cannot read a run dir under a private home.
    # The local stack listens on loopback only.
    user_directive = "user root root;" if os.geteuid() == 0 else "# workers run as the invoking user"
    files["nginx.conf"] = render(
        _template("nginx.conf.template"),
        {
            "user_directive": user_directive,
            "run_dir": str(run_dir),
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
