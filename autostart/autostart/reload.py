"""What a config reload (SIGHUP) changes, service by service, decided without I/O (app.py carries it out).

- unchanged: the service keeps its lifecycle as it is (state, requests in flight and waiting, idle clock);
- retuned (only settings of the state machine or the route changed: timeouts, maxWaiting, blocking, the User-Agents
  it ignores, activityPath, readyPollInterval, resumeGrace): the same lifecycle takes the new settings, the service keeps running;
- replaced (how it is started, stopped or reached changed: provider, containers, composeDir, startCommand,
  stopCommand, cwd, env, upstreamHost, proxyPort, healthPath, readiness, stopTimeout, name): a new lifecycle takes
  the new requests while the old one is retired (its requests in flight finish, then it is let go as at shutdown);
- added: a new lifecycle, adopted if the service already runs;
- removed: retired like a replaced one.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .config import AutostartConfig, ServiceConfig
from .providers.base import Provider

# Settings the lifecycle or the route reads; every other one is the provider's (it reads its ServiceConfig).
RETUNABLE = frozenset({
    "blocking", "start_timeout", "progress_timeout", "failed_start_backoff", "activity_path", "idle_timeout",
    "request_timeout", "max_waiting", "ready_poll_interval", "ignore_user_agents", "resume_grace",
})


@dataclass(frozen=True)
class ReloadPlan:
    unchanged: list[str] = field(default_factory=list)
    retuned: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, list[str]]:
        """For the log line: the hosts in each group that is not empty."""
        groups = {"unchanged": self.unchanged, "retuned": self.retuned, "replaced": self.replaced,
                  "added": self.added, "removed": self.removed}
        return {name: hosts for name, hosts in groups.items() if hosts}


def changed_fields(old: ServiceConfig, new: ServiceConfig) -> set[str]:
    return {name for name in ServiceConfig.model_fields if getattr(old, name) != getattr(new, name)}


def plan_reload(running: AutostartConfig, wanted: AutostartConfig) -> ReloadPlan:
    result = ReloadPlan()
    for host, service in wanted.services.items():
        old = running.services.get(host)
        if old is None:
            result.added.append(host)
            continue
        changed = changed_fields(old, service)
        if not changed:
            result.unchanged.append(host)
        elif changed <= RETUNABLE:
            result.retuned.append(host)
        else:
            result.replaced.append(host)
    result.removed.extend(host for host in running.services if host not in wanted.services)
    return result


def address(service: ServiceConfig) -> tuple[str, int]:
    return service.upstream_host, service.proxy_port


class AfterRetirement:
    """The provider of a service that takes over the address of a retiring `command` service: nothing is started,
    and nothing found listening is adopted, until the old one has let go (its requests finished, its child
    stopped), so two versions never serve one port at once. Requests meanwhile wait as during a start."""

    def __init__(self, provider: Provider, retired: asyncio.Future[None]) -> None:
        self.provider = provider
        self.retired = retired

    async def start(self) -> None:
        await asyncio.shield(self.retired)
        await self.provider.start()

    async def stop(self) -> None:
        if self.retired.done():
            await self.provider.stop()

    async def is_running(self) -> bool:
        return self.retired.done() and await self.provider.is_running()

    async def is_ready(self) -> bool:
        return self.retired.done() and await self.provider.is_ready()

    async def start_progress(self) -> object:
        return await self.provider.start_progress()

    async def interrupted(self) -> bool:
        return self.retired.done() and await self.provider.interrupted()

    async def close(self) -> None:
        await self.provider.close()
