"""Assembly: config → providers and lifecycles → the two paths → listening server, plus the supervisor loop that
stops idle services and notices ones stopped or started from outside, and the config reload (SIGHUP)."""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

from .activity import HttpActivity
from .config import AutostartConfig, ConfigError, ServiceConfig, load_config
from .fastpath import FastPath
from .identity import file_digest
from .lifecycle import Clock, ServiceLifecycle, Timing
from .providers import create_provider
from .providers.base import Provider
from .proxy import Proxy, Server
from .reload import AfterRetirement, ReloadPlan, address, plan_reload
from .routes import RouteTable
from .status import Metrics, Reporter

log = logging.getLogger("autostart")

MAX_FIELD_SIZE = 16 * 1024
# Behind Nginx connections are reused for a long time; idle ones are dropped after this.
KEEPALIVE_SECONDS = 75.0
# In-flight requests get this long to finish on SIGTERM (systemd TimeoutStopSec is 30).
SHUTDOWN_GRACE_SECONDS = 25.0
# At shutdown, a connection with no request under way (accepted a moment ago, or kept alive after its last answer) is
# left open this long, for its client to send its next request (answered with `Connection: close`) or to close it.
# Closing it here instead races the request its client may be sending: that request fails (Nginx answers a POST 502;
# tests/autostart/test_upgrade_paths.py saw 4 POSTs in 80,000 fail so over three hand-overs). Longer than Nginx's
# upstream keepalive_timeout (nginx/conf.d/whisper-platform.conf.template; tests/stack/test_nginx.py checks the two),
# so every connection Nginx holds is closed by Nginx itself, or carries one more request, before the proxy would.
IDLE_CONNECTION_GRACE_SECONDS = 4.0


def timing(service: ServiceConfig) -> Timing:
    return Timing(
        start_timeout=service.start_timeout,
        idle_timeout=service.idle_timeout,
        max_waiting=service.max_waiting,
        poll_interval=service.ready_poll_interval,
        progress_timeout=service.progress_timeout,
        failed_start_backoff=service.failed_start_backoff,
        resume_grace=service.resume_grace,
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
        self._provider_factory = provider_factory
        self._clock = clock
        self.lifecycles: dict[str, ServiceLifecycle] = {}
        self.metrics = Metrics(self.lifecycles)
        self._reporter = Reporter(self.metrics)
        for host, service in config.services.items():
            self.lifecycles[host] = self._lifecycle(service, self._provider_factory(service))
        self.table = RouteTable(config, self.lifecycles)
        # What /_autostart/health tells besides "ok" (identity.py): filled in by the command line.
        self.about: dict[str, object] = {}
        self.proxy = Proxy(self.table, self.lifecycles, self.metrics, identity=lambda: self.about)
        # Both paths are made in start(): aiohttp's server needs the running event loop.
        self._full: Server | None = None
        self.fast: FastPath | None = None
        self._listener: asyncio.Server | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()
        self._stopping = False
        # Lifecycles of services a reload removed or replaced, until their requests in flight have finished.
        self._retiring: dict[ServiceLifecycle, asyncio.Task[None]] = {}

    def _lifecycle(self, service: ServiceConfig, provider: Provider) -> ServiceLifecycle:
        return ServiceLifecycle(service.name, provider, timing(service), clock=self._clock, observer=self._reporter,
                                activity=activity_probe(service))

    async def start(self, host: str, port: int, *, sock: socket.socket | None = None, resume: bool = True) -> int:
        """Adopt what already runs, then listen on `sock` (inherited: listeners.py) or on host:port. With `resume`
        (a fresh start, not a hand-over), services interrupted while no proxy ran are woken (lifecycle.plan_resume).
        Returns the port it listens on (useful with port 0)."""
        await asyncio.gather(*(lifecycle.adopt() for lifecycle in self.lifecycles.values()))
        await self.proxy.open()
        self._full = Server(
            self.proxy.handle,
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,
            max_field_size=MAX_FIELD_SIZE,
            max_line_size=MAX_FIELD_SIZE,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        self.fast = FastPath(self.table, self.metrics, self._full)
        loop = asyncio.get_running_loop()
        # Every connection starts on the fast path; what it cannot relay goes to the full path (aiohttp).
        if sock is not None:
            self._listener = await loop.create_server(self.fast.protocol, sock=sock, backlog=1024)
        else:
            self._listener = await loop.create_server(self.fast.protocol, host, port, backlog=1024,
                                                      reuse_address=True)
        bound_host, bound = self._listener.sockets[0].getsockname()[:2]
        self._supervisor = asyncio.create_task(self._supervise(), name="supervisor")
        log.info("listening", extra={"host": bound_host, "port": bound, "services": {
            h: {"name": s.name, "provider": s.provider, "state": self.lifecycles[h].state.value}
            for h, s in self.config.services.items()}})
        if resume:
            for lifecycle in self.lifecycles.values():
                lifecycle.plan_resume()
        return bound

    def listening_fd(self) -> int:
        """The listening socket's descriptor (what a hand-over passes on)."""
        assert self._listener is not None, "start() first"
        return self._listener.sockets[0].fileno()

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            if self.fast is not None:
                self.fast.sweep(KEEPALIVE_SECONDS)
            lifecycles = list(self.lifecycles.values())
            results = await asyncio.gather(*(lifecycle.check() for lifecycle in lifecycles), return_exceptions=True)
            for lifecycle, result in zip(lifecycles, results):
                if isinstance(result, Exception):
                    log.error("check failed", exc_info=result, extra={"service": lifecycle.name})

    # -- reload ------------------------------------------------------------------------------------------

    async def reload_file(self, path: Path) -> bool:
        """Read and validate the config file, then reload it; a file that cannot be used leaves the running
        config as it is (one log line says why). True when the new config is in force."""
        async with self._reloading:
            if self._stopping:
                log.warning("config reload ignored: the proxy is shutting down", extra={"path": str(path)})
                return False
            try:
                config = load_config(path)
                digest = file_digest(path)
            except (ConfigError, OSError) as exc:
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                heading = lines.pop(0) if len(lines) > 1 and lines[0].endswith(":") else ""
                reason = " ".join(filter(None, [heading, "; ".join(lines)]))  # one line, however many problems
                log.error("config reload refused: the running config stays in force",
                          extra={"path": str(path), "reason": reason})
                return False
            await self._reload(config)
            self.about["config"] = digest
            return True

    async def reload(self, config: AutostartConfig) -> ReloadPlan:
        async with self._reloading:
            return await self._reload(config)

    async def _reload(self, config: AutostartConfig) -> ReloadPlan:
        plan = plan_reload(self.config, config)
        lifecycles: dict[str, ServiceLifecycle] = {}
        for host in plan.unchanged + plan.retuned:
            lifecycles[host] = self.lifecycles[host]
        for host in plan.retuned:
            service = config.services[host]
            lifecycles[host].retune(timing(service), activity_probe(service))
        # A new service on the address of a retiring command service waits until that one has let go.
        leaving = [(self.lifecycles[host], self.config.services[host]) for host in plan.replaced + plan.removed]
        loop = asyncio.get_running_loop()
        let_go = {address(service): loop.create_future()
                  for _, service in leaving if service.provider == "command"}
        arriving = []
        for host in plan.replaced + plan.added:
            service = config.services[host]
            provider = self._provider_factory(service)
            gate = let_go.get(address(service))
            if gate is not None:
                provider = AfterRetirement(provider, gate)
            lifecycles[host] = self._lifecycle(service, provider)
            arriving.append(lifecycles[host])
        # A replaced service that keeps running (the same containers) is adopted before requests go to it.
        await asyncio.gather(*(lifecycle.adopt() for lifecycle in arriving))
        # The switch: new requests take the new routes from here on; those in flight keep the route they had.
        self.config = config
        self.lifecycles.clear()
        self.lifecycles.update({host: lifecycles[host] for host in config.services})
        self.table.load(config, self.lifecycles)
        if self.fast is not None:
            self.fast.forget_pools()
        for lifecycle, service in leaving:
            retirement = asyncio.ensure_future(self._retire(lifecycle, service.request_timeout))
            self._retiring[lifecycle] = retirement
            retirement.add_done_callback(partial(self._retired, lifecycle, let_go.get(address(service))))
        log.info("config reloaded", extra=plan.summary())
        return plan

    def _retired(self, lifecycle: ServiceLifecycle, gate: asyncio.Future[None] | None, _: object) -> None:
        self._retiring.pop(lifecycle, None)
        if gate is not None and not gate.done():
            gate.set_result(None)

    async def _retire(self, lifecycle: ServiceLifecycle, grace: float) -> None:
        """Let a removed or replaced service's requests in flight (and waiting) finish, up to `grace` seconds
        (its requestTimeout), then let it go as at shutdown: a command child is stopped, containers keep running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        try:
            while (lifecycle.in_flight or lifecycle.waiting) and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await lifecycle.close()
            await lifecycle.provider.close()
        log.info("service let go after a reload", extra={"service": lifecycle.name})

    # -- shutdown ----------------------------------------------------------------------------------------

    def _between_requests(self) -> bool:
        """Whether a connection on either path is open with no request under way (see IDLE_CONNECTION_GRACE_SECONDS)."""
        fast = self.fast is not None and self.fast.between_requests()
        return fast or (self._full is not None and self.proxy.idle_connections(len(self._full.connections)))

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop listening, let requests in flight finish (up to `grace`), then close everything."""
        self._stopping = True
        async with self._reloading:
            pass  # a reload under way completes first; later ones are ignored
        if self._supervisor is not None:
            self._supervisor.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._listener is not None:
            self._listener.close()
        if self.fast is not None:
            self.fast.drain()
        self.proxy.draining = True
        everything = [*self.lifecycles.values(), *self._retiring]
        # Requests in flight, requests waiting for a wake (a hold just released), and the next request of a
        # connection between requests (it may be on its way) are all answered; then the rest is closed.
        idle_until = loop.time() + IDLE_CONNECTION_GRACE_SECONDS
        while loop.time() < deadline and (
                any(lifecycle.in_flight or lifecycle.waiting for lifecycle in everything)
                or (loop.time() < idle_until and self._between_requests())):
            await asyncio.sleep(0.05)
        if self._full is not None:
            # What is left: WebSocket sessions (cut when the grace ends) and connections still idle. Never 0: aiohttp
            # reads a timeout of 0 as none.
            await self._full.shutdown(max(deadline - loop.time(), 0.05))
        retirements = list(self._retiring.values())
        for retirement in retirements:
            retirement.cancel()  # closes its lifecycle and provider on the way out
        await asyncio.gather(*retirements, return_exceptions=True)
        if self.fast is not None:
            self.fast.close()
        await self.proxy.close()
        for lifecycle in self.lifecycles.values():
            await lifecycle.close()
            await lifecycle.provider.close()
