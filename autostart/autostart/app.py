"""Assembly: config → providers and lifecycles → proxy → listening server, plus the supervisor loop that
stops idle services and notices ones stopped or started from outside."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .activity import HttpActivity
from .config import AutostartConfig, ServiceConfig
from .lifecycle import Clock, ServiceLifecycle, Timing
from .providers import create_provider
from .providers.base import Provider
from .fastpath import FastProtocol
from .proxy import Proxy, Server
from .status import Metrics, Reporter

log = logging.getLogger("autostart")

MAX_FIELD_SIZE = 16 * 1024
# Behind Nginx connections are reused for a long time; idle ones are dropped after this.
KEEPALIVE_SECONDS = 75.0
# In-flight requests get this long to finish on SIGTERM (systemd TimeoutStopSec is 30).
SHUTDOWN_GRACE_SECONDS = 25.0


def timing(service: ServiceConfig) -> Timing:
    return Timing(
        start_timeout=service.start_timeout,
        idle_timeout=service.idle_timeout,
        max_waiting=service.max_waiting,
        poll_interval=service.ready_poll_interval,
        progress_timeout=service.progress_timeout,
        failed_start_backoff=service.failed_start_backoff,
    )


def activity_probe(service: ServiceConfig) -> HttpActivity | None:
    if service.activity_path is None:
        return None
    return HttpActivity(service.upstream_host, service.proxy_port, service.activity_path)


class Autostart:
    def __init__(
        self,
        config: AutostartConfig,
        *,
        provider_factory: Callable[[ServiceConfig], Provider] = create_provider,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.lifecycles: dict[str, ServiceLifecycle] = {}
        self.metrics = Metrics(self.lifecycles)
        reporter = Reporter(self.metrics)
        for host, service in config.services.items():
            self.lifecycles[host] = ServiceLifecycle(
                service.name, provider_factory(service), timing(service), clock=clock, observer=reporter,
                activity=activity_probe(service),
            )
        self.proxy = Proxy(config, self.lifecycles, self.metrics)
        self._listener: asyncio.Server | None = None
        self._handoff_server: Server | None = None
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        """Adopt what already runs, then listen. Returns the bound port (useful with port 0)."""
        await asyncio.gather(*(lifecycle.adopt() for lifecycle in self.lifecycles.values()))
        await self.proxy.open()
        self._handoff_server = Server(
            self.proxy.handle,
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,
            max_field_size=MAX_FIELD_SIZE,
            max_line_size=MAX_FIELD_SIZE,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        loop = asyncio.get_running_loop()
        # Every connection starts on the fast path; what it cannot relay goes to the aiohttp handler.
        self._listener = await loop.create_server(
            lambda: FastProtocol(self.proxy, self._handoff_server), host, port, backlog=1024, reuse_address=True
        )
        bound = self._listener.sockets[0].getsockname()[1]
        self._supervisor = asyncio.create_task(self._supervise(), name="supervisor")
        log.info("listening", extra={"host": host, "port": bound, "services": {
            h: {"name": s.name, "provider": s.provider, "state": self.lifecycles[h].state.value}
            for h, s in self.config.services.items()}})
        return bound

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            now = time.monotonic()
            for connection in list(self.proxy.fast_connections):
                connection.sweep(KEEPALIVE_SECONDS, now)
            results = await asyncio.gather(
                *(lifecycle.check() for lifecycle in self.lifecycles.values()), return_exceptions=True
            )
            for lifecycle, result in zip(self.lifecycles.values(), results):
                if isinstance(result, Exception):
                    log.error("check failed", exc_info=result, extra={"service": lifecycle.name})

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop listening, let requests in flight finish (up to `grace`), then close everything."""
        if self._supervisor is not None:
            self._supervisor.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.proxy.fast_connections):
            connection.close_if_idle()
        handed_off = (
            asyncio.ensure_future(self._handoff_server.shutdown(grace)) if self._handoff_server is not None else None
        )
        while any(lifecycle.in_flight for lifecycle in self.lifecycles.values()) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if handed_off is not None:
            await handed_off
        for connection in list(self.proxy.fast_connections):
            if connection.transport is not None:
                connection.transport.close()
        await self.proxy.close()
        for lifecycle in self.lifecycles.values():
            await lifecycle.close()
            await lifecycle.provider.close()
