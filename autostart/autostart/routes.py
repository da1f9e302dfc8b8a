"""The routing table: which service a request's Host names, and what both paths need to know about it.

Built from the config at start-up and rebuilt on each reload (`RouteTable.load`); a request keeps the Route it was
admitted with until it is answered, so a reload never changes a request in flight.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from .config import AutostartConfig, ServiceConfig
from .lifecycle import ServiceLifecycle

_HOST = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?$")
RETRY_AFTER_STARTING = 5
STATUS_PREFIX = "/_autostart/"
"""The proxy's own pages (status, metrics, health): never forwarded; answered on the status hosts only."""
HOLD_PATH = "/_autostart/hold"
RELEASE_PATH = "/_autostart/release"
"""The admin calls of an upgrade (admin.py), followed by `/<service>`: POST, from this host only."""


def parse_host(header: str | None) -> str | None:
    """The host name of a Host header, lower-cased, port dropped; None when it is not a valid Host."""
    if not header:
        return None
    match = _HOST.match(header.strip())
    if match is None or (match["port"] is not None and int(match["port"]) > 65535):
        return None
    if match["v6"] is not None:
        return match["v6"].lower()
    return match["name"].lower().rstrip(".")


@dataclass(eq=False)
class Route:
    """One service as the hot path needs it, computed once per config."""

    host: str
    service: ServiceConfig
    lifecycle: ServiceLifecycle
    base_url: str  # also what the fast path's keep-alive pools are keyed by
    timeout: aiohttp.ClientTimeout
    ignored_agents: re.Pattern[str] | None
    retry_after: str

    @classmethod
    def build(cls, host: str, service: ServiceConfig, lifecycle: ServiceLifecycle, global_agents: list[str]) -> Route:
        patterns = [*global_agents, *service.ignore_user_agents]
        upstream = f"[{service.upstream_host}]" if ":" in service.upstream_host else service.upstream_host
        return cls(
            host=host,
            service=service,
            lifecycle=lifecycle,
            base_url=f"http://{upstream}:{service.proxy_port}",
            timeout=aiohttp.ClientTimeout(total=service.request_timeout, sock_connect=10),
            ignored_agents=re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None,
            retry_after=str(max(1, min(RETRY_AFTER_STARTING, int(service.start_timeout)))),
        )

    def ignores(self, user_agent: bytes | None) -> bool:
        """Whether requests with this User-Agent (raw header value) neither wake the service nor keep it awake."""
        agents = self.ignored_agents
        return agents is not None and agents.search(user_agent.decode("latin-1") if user_agent else "") is not None


class RouteTable:
    """What both paths read from the config: the routes by host name, the status hosts, the access-log switch.
    One object shared by the two paths; `load` swaps its contents at once."""

    def __init__(self, config: AutostartConfig, lifecycles: Mapping[str, ServiceLifecycle]) -> None:
        self.by_host: dict[str, Route] = {}
        self.status_hosts: frozenset[str] = frozenset()
        self.access_log = False
        self.load(config, lifecycles)

    def load(self, config: AutostartConfig, lifecycles: Mapping[str, ServiceLifecycle]) -> None:
        self.by_host = {
            host: Route.build(host, service, lifecycles[host], config.ignore_user_agents)
            for host, service in config.services.items()
        }
        self.status_hosts = frozenset(h.lower() for h in config.status_hosts)
        self.access_log = config.access_log
