"""Host-side files of the Docker deployment (`make up`): the Nginx sites and the proxy config for a domain.

    PYTHONPATH=scripts python -m stack.deploy nginx --domain example.com [--nginx-dir /etc/nginx] ...
    PYTHONPATH=scripts python -m stack.deploy proxy-config --domain example.com --dest /etc/whisper-platform/autostart.json
    PYTHONPATH=scripts python -m stack.deploy disable-nginx --domain example.com

The Nginx layout (Debian): conf.d/whisper-platform.conf (http level), snippets/{tls,basic-auth,json-errors,
response-headers}.conf, sites-available/<host>.conf linked from sites-enabled/. Certificates are Let's Encrypt's
(/etc/letsencrypt/live/<host>/); until certbot has made them, a self-signed pair stands in so Nginx can start and
serve the ACME challenge on port 80.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .credentials import CredentialsError, ensure_credentials, write_htpasswd
from .nginx_config import NginxConfig, NginxConfigError, Site, installed_nginx_version, nginx_binary, site_files
from .settings import ROOT
from .tls import CertificateError, ensure_self_signed

SERVICE_PREFIXES = {"whisper-faster": "whisper", "whisperx": "whisperx"}


def hostnames(domain: str) -> list[str]:
    return [f"{prefix}.{domain}" for prefix in SERVICE_PREFIXES.values()]


def install_nginx(args: argparse.Namespace) -> int:
    nginx_dir: Path = args.nginx_dir
    sites = []
    for host in hostnames(args.domain):
        site = Site.letsencrypt(host)
        if not site.ssl_certificate.is_file():
            fallback_dir = nginx_dir / "whisper-selfsigned"
            cert, key = fallback_dir / f"{host}.pem", fallback_dir / f"{host}.key"
            ensure_self_signed(cert, key, [host])
            print(
                f"no Let's Encrypt certificate for {host} yet: using a self-signed one ({cert}).\n"
                f"  get the real one: certbot certonly --webroot -w {args.acme_webroot} -d {host}  and run `make up` again"
            )
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
    args.acme_webroot.mkdir(parents=True, exist_ok=True)
    if not args.htpasswd.is_file() or args.htpasswd.stat().st_size == 0:
        password = os.environ.get("WHISPER_PASSWORD") or None
        store = args.credentials_store
        credentials = ensure_credentials(store, os.environ.get("WHISPER_USER") or None, password)
        write_htpasswd(args.htpasswd, credentials)
        if credentials.generated:
            print(f"basic-auth user {credentials.user!r} created; its password is in {store} (0600)")
        else:
            print(f"basic-auth user {credentials.user!r} written to {args.htpasswd}")
    for relative, text in site_files(config).items():
        path = nginx_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    enabled = nginx_dir / "sites-enabled"
    enabled.mkdir(parents=True, exist_ok=True)
    for site in sites:
        link = enabled / f"{site.server_name}.conf"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(nginx_dir / "sites-available" / f"{site.server_name}.conf")
        print(f"enabled {link}")
    return 0


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
    nginx.set_defaults(run=install_nginx)

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
    except (NginxConfigError, CertificateError, CredentialsError, OSError) as exc:
        print(f"stack.deploy {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
