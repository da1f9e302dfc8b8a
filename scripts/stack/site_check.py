"""The request `make up` makes through Nginx before it says `up:`: does a site answer with the credentials it printed?

`GET /v1/models` on the site's HTTPS address, with the basic-auth user and password and the User-Agent
`whisper-platform-check`, which the proxy's shipped config lists in `ignoreUserAgents`: the request goes through
Nginx (TLS, the htpasswd file, the rate limit) to the proxy, which answers it without waking a sleeping service
(503 "asleep") or passes it on to one that is awake (200). Either proves the path; anything else is the reason
`make up` fails, named.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

USER_AGENT = "whisper-platform-check"
PATH = "/v1/models"
TIMEOUT_SECONDS = 15


@dataclass(frozen=True)
class SiteAnswer:
    status: int
    body: str

    def proxy_answered(self) -> bool:
        """200 from an awake service, or the proxy's own 503 for a sleeping one (JSON naming the service)."""
        if self.status == 200:
            return True
        try:
            body = json.loads(self.body)
        except ValueError:
            return False
        return self.status == 503 and isinstance(body, dict) and "service" in body


def connect_address(https_listen: str) -> tuple[str, int]:
    """Where to reach an Nginx `listen` value (`443`, `127.0.0.1:8443`, `[::]:443`, `*:443`) from this host."""
    host, _, port = https_listen.rpartition(":")
    if not host or host in ("*", "0.0.0.0"):
        return "127.0.0.1", int(port or https_listen)
    if host in ("[::]",):
        return "::1", int(port)
    return host.strip("[]"), int(port)


def ask(host: str, address: tuple[str, int], cafile: Path | None, user: str | None, password: str | None) -> SiteAnswer:
    """One request to https://<host><PATH> sent to `address` (SNI and Host are `host`)."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    headers = {"Host": host, "User-Agent": USER_AGENT, "Accept": "application/json"}
    if user is not None and password is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    with socket.create_connection(address, timeout=TIMEOUT_SECONDS) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            connection = http.client.HTTPConnection(host, timeout=TIMEOUT_SECONDS)
            connection.sock = tls
            connection.request("GET", PATH, headers=headers)
            response = connection.getresponse()
            return SiteAnswer(response.status, response.read(64 * 1024).decode("utf-8", "replace"))


def explain(host: str, answer: SiteAnswer, with_credentials: bool) -> str:
    """Why a site's answer means it does not work, and where to look."""
    if answer.status == 401:
        return (f"https://{host} refused the basic-auth credentials make up printed (401): the htpasswd file does not "
                "hold that user and password (see docs/deployment.md, basic-auth users)") if with_credentials else ""
    if answer.status == 500:
        return (f"https://{host} answered 500 from Nginx itself: its error log says why (commonly a file its worker "
                "user cannot read, e.g. the htpasswd file)")
    if answer.status == 502:
        return f"https://{host} answered 502: Nginx cannot reach the auto-start proxy"
    return f"https://{host} answered {answer.status}: {answer.body[:300]}"
