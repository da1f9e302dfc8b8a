"""The proxy's admin calls, which change what it does (the status pages only look): holding a service while `make up`
re-creates its containers, and releasing it.

    POST /_autostart/hold/<service>?ttl=300&drain=120    → 200 once the service is stopped (see lifecycle.hold)
    POST /_autostart/release/<service>                   → 200; waiting requests wake the new containers

`<service>` is a service's `name` or its host name. Only a client on this host talks to them: the peer must be a
loopback address and the request must not have come through a proxy (no X-Forwarded-For, which Nginx sets), so the
public sites can never reach them even if a site forwarded `/_autostart/`. A hold ends by itself after `ttl` seconds,
so a `make up` that dies between the two calls leaves the service held for at most that long.
"""
from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping

from .forwarding import Answer
from .lifecycle import ServiceLifecycle
from .routes import HOLD_PATH, RELEASE_PATH

HOLD_PREFIX = HOLD_PATH + "/"
RELEASE_PREFIX = RELEASE_PATH + "/"
DEFAULT_TTL = 300.0
DEFAULT_DRAIN = 120.0
MAX_SECONDS = 3600.0


def is_admin_path(path: str) -> bool:
    return path.startswith((HOLD_PREFIX, RELEASE_PREFIX))


def from_this_host(peer: str | None, forwarded: bool) -> bool:
    if forwarded or not peer:
        return False
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


class BadParameter(ValueError):
    pass


def _seconds(query: Mapping[str, str], name: str, default: float) -> float:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadParameter(f"{name} must be a number of seconds, got {raw[:40]!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise BadParameter(f"{name} must be between 0 and {MAX_SECONDS:g} seconds")
    return value


def find(lifecycles: Mapping[str, ServiceLifecycle], wanted: str) -> ServiceLifecycle | None:
    wanted = wanted.strip().lower()
    for host, lifecycle in lifecycles.items():
        if wanted in (host, lifecycle.name.lower()):
            return lifecycle
    return None


async def admin(method: str, path: str, query: Mapping[str, str],
                lifecycles: Mapping[str, ServiceLifecycle]) -> Answer:
    if method != "POST":
        return Answer(405, {"error": "method not allowed: use POST"})
    hold = path.startswith(HOLD_PREFIX)
    name = path[len(HOLD_PREFIX if hold else RELEASE_PREFIX):]
    lifecycle = find(lifecycles, name)
    if lifecycle is None:
        return Answer(404, {"error": "no such service", "service": name[:100],
                            "services": sorted(lifecycle.name for lifecycle in lifecycles.values())})
    if not hold:
        released = lifecycle.unhold("released")
        return Answer(200, {"service": lifecycle.name, "released": released, "state": lifecycle.state.value})
    try:
        ttl = _seconds(query, "ttl", DEFAULT_TTL)
        drain = _seconds(query, "drain", DEFAULT_DRAIN)
    except BadParameter as exc:
        return Answer(400, {"error": str(exc)})
    if ttl <= 0:
        return Answer(400, {"error": "ttl must be above 0 seconds"})
    outcome = await lifecycle.hold(ttl, drain)
    body = {"service": lifecycle.name, "held": lifecycle.held, "stopped": outcome.stopped,
            "cutRequests": outcome.cut, "waitedSeconds": round(outcome.waited, 3),
            "holdLeftSeconds": round(lifecycle.hold_left(), 3), "state": lifecycle.state.value}
    if not outcome.stopped:
        reason = "the hold ended before the service stopped" if not lifecycle.held else \
            f"the service could not be stopped: {lifecycle.last_error or 'unknown reason'}"
        return Answer(409, {**body, "error": reason})
    return Answer(200, body)
