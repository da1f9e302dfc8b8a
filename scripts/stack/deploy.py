"""Host-side files of the Docker deployment (`make up`): the Nginx sites and the proxy config for a domain.

    PYTHONPATH=scripts python -m stack.deploy preflight --domain example.com [--nginx-dir /etc/nginx] ...
    PYTHONPATH=scripts python -m stack.deploy nginx --domain example.com [--nginx-dir /etc/nginx] ...
    PYTHONPATH=scripts python -m stack.deploy check-sites --domain example.com ...
    PYTHONPATH=scripts python -m stack.deploy models --service whisper-faster=faster-whisper ...
    PYTHONPATH=scripts python -m stack.deploy proxy-config --domain example.com --dest /etc/whisper-platform/autostart.json
    PYTHONPATH=scripts python -m stack.deploy disable-nginx --domain example.com

The Nginx layout (Debian): conf.d/whisper-platform.conf (http level), snippets/{tls,basic-auth,json-errors,
response-headers}.conf, sites-available/<host>.conf linked from sites-enabled/. Certificates are Let's Encrypt's
(/etc/letsencrypt/live/<host>/); until certbot has made them, a self-signed pair stands in so Nginx can start and
serve the ACME challenge on port 80.

Every file written for Nginx is root's, readable by the group of Nginx's worker user (from its nginx.conf, see
nginx_host.py) and by nobody else, and is checked as that user after it is written; `preflight` runs the checks that
need nothing written (the worker user exists, an existing htpasswd and certificate folder are usable) before `make up`
changes anything. `nginx` keeps the files it replaces and puts them back when `nginx -t` refuses the new ones, so a
failed re-run leaves the running sites as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

from .credentials import Credentials, CredentialsError, ensure_credentials, write_htpasswd
from .model_report import container_env, describe, hub_reachable, plans
from .nginx_config import NginxConfig, NginxConfigError, Site, installed_nginx_version, nginx_binary, site_files
from .nginx_host import NginxHostError, Worker, check_owned_by_root, check_readable, secure, worker_of
from .settings import ROOT
from .site_check import ask, connect_address, explain
from .tls import CertificateError, ensure_self_signed

SERVICE_PREFIXES = {"whisper-faster": "whisper", "whisperx": "whisperx"}


def hostnames(domain: str) -> list[str]:
    return [f"{prefix}.{domain}" for prefix in SERVICE_PREFIXES.values()]


def self_signed_dir(nginx_dir: Path) -> Path:
    return nginx_dir / "whisper-selfsigned"


def _worker(args: argparse.Namespace) -> Worker:
    conf = args.nginx_dir / "nginx.conf"
    if not conf.is_file():
        raise NginxHostError(f"{conf} is missing (is NGINX_DIR={args.nginx_dir} Nginx's configuration folder?)")
    return worker_of(conf, nginx_binary())


def preflight(args: argparse.Namespace) -> int:
    """What can be checked before anything is written: Nginx's worker user, an existing htpasswd file it must read,
    and the ownership of existing certificate folders."""
    worker = _worker(args)
    if args.htpasswd.exists():
        check_readable([args.htpasswd], worker)
    fallback = self_signed_dir(args.nginx_dir)
    certificates = [fallback, *fallback.glob("*")] if fallback.is_dir() else []
    for host in hostnames(args.domain):
        site = Site.letsencrypt(host)
        certificates += [site.ssl_certificate, site.ssl_certificate_key]
    check_owned_by_root(certificates)
    print(f"Nginx workers run as {worker.user}:{worker.group} ({worker.source})")
    return 0


def install_nginx(args: argparse.Namespace) -> int:
    nginx_dir: Path = args.nginx_dir
    worker = _worker(args)
    written: dict[Path, bytes | None] = {}  # what each file held before this run (None: it did not exist)
    sites = []
    for host in hostnames(args.domain):
        site = Site.letsencrypt(host)
        if not site.ssl_certificate.is_file():
            fallback_dir = self_signed_dir(nginx_dir)
            cert, key = fallback_dir / f"{host}.pem", fallback_dir / f"{host}.key"
            fallback_dir.mkdir(parents=True, exist_ok=True)
            secure(fallback_dir, worker)
            if ensure_self_signed(cert, key, [host]):
                print(
                    f"no Let's Encrypt certificate for {host} yet: using a self-signed one ({cert}).\n"
                    f"  get the real one: certbot certonly --webroot -w {args.acme_webroot} -d {host}  and run "
                    "`make up` again"
                )
            for path in (cert, key):
                secure(path, worker)
            site = Site(host, cert, key)
        sites.append(site)
    config = NginxConfig(
        sites=sites,
        proxy_address=args.proxy_address,
        cors_origins=args.cors_origin,
        htpasswd_file=args.htpasswd,
        acme_webroot=args.acme_webroot,
        max_body_size=args.max_body_size,
        rate_limit=args.rate_limit,
        rate_limit_burst=args.rate_limit_burst,
        access_log_dir=args.access_log_dir,
        http_listen=tuple(args.http_listen or NginxConfig.http_listen),
        https_listen=tuple(args.https_listen or NginxConfig.https_listen),
        https_port=args.https_port,
        nginx_version=installed_nginx_version(nginx_binary() or "nginx") or (1, 22, 1),
    )
    # The ACME challenge is public content the workers serve: world-readable like any web root. The access logs are
    # opened by the master (root), like /var/log/nginx.
    args.acme_webroot.mkdir(mode=0o755, parents=True, exist_ok=True)
    args.access_log_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not args.htpasswd.is_file() or args.htpasswd.stat().st_size == 0:
        written[args.htpasswd] = None
        credentials = _credentials(args)
        write_htpasswd(args.htpasswd, credentials)
        secure(args.htpasswd, worker)
        if credentials.generated:
            print(f"basic-auth user {credentials.user!r} created; its password is in {args.credentials_store} (0600)")
        else:
            print(f"basic-auth user {credentials.user!r} written to {args.htpasswd}")
    enabled = nginx_dir / "sites-enabled"
    links = [enabled / f"{site.server_name}.conf" for site in sites]
    previous_links = {link: os.readlink(link) if link.is_symlink() else None for link in links}
    try:
        for relative, text in site_files(config).items():
            path = nginx_dir / relative
            written.setdefault(path, path.read_bytes() if path.is_file() else None)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            secure(path, worker)
            print(f"wrote {path}")
        enabled.mkdir(parents=True, exist_ok=True)
        for site, link in zip(sites, links):
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(nginx_dir / "sites-available" / f"{site.server_name}.conf")
            print(f"enabled {link}")
        check_readable([args.htpasswd, args.acme_webroot], worker)
        if args.nginx_conf is not None:
            _nginx_t(args.nginx_conf)
    except BaseException:
        _restore(written, previous_links)
        raise
    print(f"Nginx's workers ({worker.user}) can read {args.htpasswd}; nginx -t accepts the configuration")
    return 0


def _credentials(args: argparse.Namespace) -> Credentials:
    password = os.environ.get("WHISPER_PASSWORD") or None
    return ensure_credentials(args.credentials_store, os.environ.get("WHISPER_USER") or None, password)


def _nginx_t(conf: Path) -> None:
    binary = nginx_binary()
    if binary is None:
        raise NginxHostError("nginx is not installed (apt-get install nginx)")
    result = subprocess.run([binary, "-t", "-q", "-c", str(conf)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NginxHostError(f"nginx -t rejects the configuration, so nothing was changed:\n{result.stderr.strip()}")


def _restore(written: dict[Path, bytes | None], links: dict[Path, str | None]) -> None:
    """Puts back what `install_nginx` replaced, so a failed re-run leaves the sites as they were."""
    for path, before in written.items():
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
    for link, target in links.items():
        if link.is_symlink() or link.exists():
            link.unlink()
        if target is not None:
            link.symlink_to(target)
    print("restored the Nginx files this run had replaced", file=sys.stderr)


def check_sites(args: argparse.Namespace) -> int:
    """One request per site through Nginx with the credentials make up printed (see site_check.py)."""
    credentials: Credentials | None = None
    if os.environ.get("WHISPER_PASSWORD") or args.credentials_store.is_file():
        credentials = _credentials(args)
    address = connect_address(args.https_listen)
    failed = []
    for host in hostnames(args.domain):
        cert = self_signed_dir(args.nginx_dir) / f"{host}.pem"
        cafile = None if Site.letsencrypt(host).ssl_certificate.is_file() else cert
        try:
            if credentials is not None:
                answer = ask(host, address, cafile, credentials.user, credentials.password)
                ok = answer.proxy_answered()
            else:  # credentials unknown to make up: a wrong password must be a 401, which proves the file readable
                answer = ask(host, address, cafile, "whisper-platform-check", "not-a-password")
                ok = answer.status == 401
        except (OSError, ssl.SSLError) as exc:
            failed.append(f"https://{host} cannot be reached on {address[0]}:{address[1]}: {exc}")
            continue
        if ok:
            who = f"user {credentials.user!r}" if credentials else "no known password (401 as expected)"
            print(f"https://{host}: answered through Nginx and the proxy ({answer.status}, {who})")
        else:
            failed.append(explain(host, answer, credentials is not None))
    if failed:
        raise NginxHostError("\n".join(failed))
    return 0


def report_models(args: argparse.Namespace) -> int:
    """Which model each service will load, and a warning when it can be neither found nor downloaded."""
    hub: bool | None = None
    for value in args.service:
        service, _, container = value.partition("=")
        try:
            found = plans(service, container)
        except RuntimeError as exc:
            print(f"warning: could not ask {service} which model it will load: {exc}", file=sys.stderr)
            continue
        for plan in found:
            offline = _offline(container)
            if plan.source is None and not offline and hub is None:
                hub = hub_reachable()
            line, warning = describe(plan, offline, bool(hub))
            print(line, file=sys.stderr if warning else sys.stdout)
    return 0


def _offline(container: str) -> bool:
    return container_env(container).get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def disable_nginx(args: argparse.Namespace) -> int:
    for host in hostnames(args.domain):
        link = args.nginx_dir / "sites-enabled" / f"{host}.conf"
        if link.is_symlink() or link.exists():
            link.unlink()
            print(f"disabled {link}")
    return 0


def write_proxy_config(args: argparse.Namespace) -> int:
    """The repository's autostart/config.json with the example hosts renamed for the domain, paths made absolute."""
    source = json.loads(args.source.read_text())
    ports = dict(_service_port(value) for value in args.port)
    services = {}
    for service in source["services"].values():
        prefix = SERVICE_PREFIXES.get(service["name"])
        if prefix is None:
            raise SystemExit(f"{args.source}: unknown service name {service['name']!r}")
        if "composeDir" in service:
            service["composeDir"] = str((args.source.parent / service["composeDir"]).resolve())
        if service["name"] in ports:
            service["proxyPort"] = ports[service["name"]]
        if args.idle_timeout is not None:
            service["idleTimeout"] = args.idle_timeout
        services[f"{prefix}.{args.domain}"] = service
    source["services"] = services
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    args.dest.write_text(json.dumps(source, indent=2) + "\n")
    print(f"wrote {args.dest}")
    return 0


def _service_port(value: str) -> tuple[str, int]:
    name, _, port = value.partition("=")
    if name not in SERVICE_PREFIXES or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"--port wants SERVICE=PORT with SERVICE one of {', '.join(SERVICE_PREFIXES)}, got {value!r}")
    return name, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stack.deploy", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    nginx = commands.add_parser("nginx", help="render and enable the Nginx sites")
    nginx.add_argument("--domain", required=True, help="sites are whisper.<domain> and whisperx.<domain>")
    nginx.add_argument("--nginx-dir", type=Path, default=Path("/etc/nginx"))
    nginx.add_argument("--proxy-address", default="127.0.0.1:8890")
    nginx.add_argument("--cors-origin", action="append", default=[], help="Swagger portal origin (repeatable)")
    nginx.add_argument("--htpasswd", type=Path, default=Path("/etc/nginx/whisper.htpasswd"))
    nginx.add_argument("--credentials-store", type=Path, default=Path("/etc/whisper-platform/credentials"))
    nginx.add_argument("--acme-webroot", type=Path, default=Path("/var/www/letsencrypt"))
    nginx.add_argument("--max-body-size", default="500M")
    nginx.add_argument("--access-log-dir", type=Path, default=Path("/var/log/nginx"))
    nginx.add_argument(
        "--rate-limit", type=int, default=int(os.environ.get("NGINX_RATE_LIMIT", NginxConfig.rate_limit)),
        help="requests per second one client address may make, sustained; 0 = no limit (env NGINX_RATE_LIMIT)",
    )
    nginx.add_argument(
        "--rate-limit-burst", type=int,
        default=int(os.environ.get("NGINX_RATE_LIMIT_BURST", NginxConfig.rate_limit_burst)),
        help="requests one address may make at once above the rate (env NGINX_RATE_LIMIT_BURST)",
    )
    nginx.add_argument("--http-listen", action="append", default=[], help="HTTP listen address (repeatable; 80)")
    nginx.add_argument("--https-listen", action="append", default=[], help="HTTPS listen address (repeatable; 443)")
    nginx.add_argument("--https-port", type=int, default=443, help="the HTTPS port clients use (redirects)")
    nginx.add_argument("--nginx-conf", type=Path, help="run `nginx -t -c` on it; restore the old files if refused")
    nginx.set_defaults(run=install_nginx)

    check = commands.add_parser("preflight", help="check Nginx's worker user and existing files before any change")
    check.add_argument("--domain", required=True)
    check.add_argument("--nginx-dir", type=Path, default=Path("/etc/nginx"))
    check.add_argument("--htpasswd", type=Path, default=Path("/etc/nginx/whisper.htpasswd"))
    check.set_defaults(run=preflight)

    sites = commands.add_parser("check-sites", help="a request through Nginx per site with the printed credentials")
    sites.add_argument("--domain", required=True)
    sites.add_argument("--nginx-dir", type=Path, default=Path("/etc/nginx"))
    sites.add_argument("--https-listen", default="443", help="one of Nginx's HTTPS listen values")
    sites.add_argument("--credentials-store", type=Path, default=Path("/etc/whisper-platform/credentials"))
    sites.set_defaults(run=check_sites)

    models = commands.add_parser("models", help="which model each service will load, and whether it can")
    models.add_argument("--service", action="append", default=[], help="SERVICE=CONTAINER (repeatable)")
    models.set_defaults(run=report_models)

    disable = commands.add_parser("disable-nginx", help="remove the sites-enabled links")
    disable.add_argument("--domain", required=True)
    disable.add_argument("--nginx-dir", type=Path, default=Path("/etc/nginx"))
    disable.set_defaults(run=disable_nginx)

    proxy = commands.add_parser("proxy-config", help="write the proxy config for the domain")
    proxy.add_argument("--domain", required=True)
    proxy.add_argument("--source", type=Path, default=ROOT / "autostart" / "config.json")
    proxy.add_argument("--dest", type=Path, required=True)
    proxy.add_argument("--port", action="append", default=[], help="SERVICE=PORT: a service's published port")
    proxy.add_argument("--idle-timeout", type=int, help="seconds without requests before a service is stopped")
    proxy.set_defaults(run=write_proxy_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (NginxConfigError, NginxHostError, CertificateError, CredentialsError, OSError) as exc:
        print(f"stack.deploy {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
