"""The fast path: plain requests to a service that is up, relayed at the protocol level (httptools parsers,
pooled keep-alive upstream connections, no per-request task or framework objects).

Chosen by measurement (bench/bench_autostart.py, 2 shared cores): through aiohttp's server and client a
proxied request cost ~190 µs of CPU and reached 0.2 × direct throughput with +10 ms p50; relayed here it costs
~30-35 µs (docs/benchmarks.md has the current figures), most of it the event loop and the unavoidable socket
calls (a read and a write on each side), so each upstream read goes to the client in one write.

It takes only what it can relay exactly: HTTP/1.1 GET/DELETE/OPTIONS without a body, no Upgrade, no Expect,
headers within the limit and none of the inspected ones repeated, to a known host whose service is ready.
Everything else is handed, with the bytes received so far, to the full path (proxy.py), which then owns the
connection. Responses of any size and framing stream back as they arrive (SSE included), with flow control.
What is forwarded and what the proxy answers itself is forwarding.py's, the same for both paths.

Three objects: `FastPath` (what the fast path owns: its client connections, its idle keep-alive connections to
each service, its Host cache), `FastProtocol` (one client connection) and `Exchange` (one request on it, from its
head to the end of its answer; as uvicorn keeps a request cycle apart from its protocol).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from .forwarding import (
    CONNECTION_REFUSED,
    CONNECTION_RESET,
    HOP_BY_HOP_BYTES,
    Answer,
    RequestHeaders,
    not_answered,
    request_id,
    unreachable,
)
from .routes import STATUS_PREFIX, Route, RouteTable, parse_host
from .status import Metrics

if TYPE_CHECKING:
    from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("autostart.proxy")

FAST_METHODS = frozenset({b"GET", b"DELETE", b"OPTIONS"})
MAX_HEADER_BYTES = 16 * 1024
UPSTREAM_IDLE_SECONDS = 4.0  # below uvicorn's 5 s keep-alive, so the upstream never closes one under us
HOST_CACHE_SIZE = 1024
_STATUS_PREFIX = STATUS_PREFIX.encode()  # the proxy's own pages: the full path answers them
_NO_BODY_STATUS = frozenset({204, 304})


class FastPath:
    """What the fast path owns: its client connections (swept by the supervisor, closed at shutdown), its idle
    keep-alive connections to each service (by the service's base URL), and a cache of Host header → host name."""

    def __init__(self, table: RouteTable, metrics: Metrics, handoff: Callable[[], RequestHandler]) -> None:
        self.table = table
        self.metrics = metrics
        self.handoff = handoff
        self.connections: set[FastProtocol] = set()
        self.pools: dict[str, list[UpstreamConnection]] = {}
        self.host_names: dict[bytes, str] = {}
        self.draining = False  # shutting down: every answer closes its connection

    def protocol(self) -> FastProtocol:
        """A protocol for a new client connection (the listener's factory)."""
        return FastProtocol(self)

    def host_name(self, host_header: bytes) -> str:
        """The host name a Host header names ("" when it is malformed), remembered for the next requests."""
        host = parse_host(host_header.decode("latin-1")) or ""
        if len(self.host_names) < HOST_CACHE_SIZE:
            self.host_names[host_header] = host
        return host

    def pool(self, route: Route) -> list[UpstreamConnection]:
        pool = self.pools.get(route.base_url)
        if pool is None:
            pool = self.pools[route.base_url] = []
        return pool

    def forget_pools(self) -> None:
        """After a reload: close the idle connections to services no route leads to any more."""
        wanted = {route.base_url for route in self.table.by_host.values()}
        for base_url in [url for url in self.pools if url not in wanted]:
            for upstream in self.pools.pop(base_url):
                upstream.close()

    def sweep(self, idle_seconds: float) -> None:
        """Run by the supervisor: close idle keep-alive connections, end requests past requestTimeout."""
        now = time.monotonic()
        for connection in list(self.connections):
            connection.sweep(idle_seconds, now)

    def drain(self) -> None:
        """At shutdown: every answer from now on closes its connection (`Connection: close`), the requests under way
        included. A connection between two requests is left open for a moment (see `between_requests`): its client
        may have sent its next request already, and closing under it would fail that request (the keep-alive race:
        one request in 3,438 failed so in the hand-over test when idle connections were closed at once)."""
        self.draining = True

    def between_requests(self) -> bool:
        """Whether a connection is still open with no request under way: accepted and not yet sent anything, or
        kept alive after its last answer (see drain)."""
        return any(connection.transport is not None and connection.exchange is None and connection.admitted is None
                   for connection in self.connections)

    def close(self) -> None:
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        for pool in self.pools.values():
            for upstream in list(pool):
                upstream.close()
        self.pools.clear()


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a service; relays one response at a time to its client."""

    def __init__(self, pool: list[UpstreamConnection]) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: FastProtocol | None = None
        # The response's end-to-end headers, already as "Name: value\r\n" pieces for the client's head.
        self.head_lines: list[bytes] = []
        self.has_length = False
        self.chunked = False
        self.reason = b""
        self.interim = False
        self.head_seen = False
        self.framed = True
        self.idle_since = 0.0
        self.closed = False
        self.paused = False  # by its client's flow control (the client reads slower than the service writes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, head: bytes, client: FastProtocol) -> None:
        self.client = client
        self.head_lines = []
        self.has_length = self.chunked = False
        self.reason = b""
        self.head_seen = False
        self.transport.write(head)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        client = self.client
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._lost()
        # What this read produced for the client (head, body, end) goes out in one write: one send() a read.
        if client is not None and client.pending:
            client.flush()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered in HOP_BY_HOP_BYTES:
            if lowered == b"transfer-encoding":
                self.chunked = True
            return
        if lowered == b"content-length":
            self.has_length = True
        self.head_lines += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # interim (103 Early Hints…): not relayed
            self.interim = True
            self.head_lines = []
            self.has_length = self.chunked = False
            self.reason = b""
            return
        self.head_seen = True
        self.framed = status in _NO_BODY_STATUS or self.has_length or self.chunked
        if self.client is not None:
            self.client.response_head(status, self.reason, self.head_lines, self.has_length)

    def on_body(self, body: bytes) -> None:
        if self.client is not None:
            self.client.response_body(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        client, self.client = self.client, None
        reusable = self.parser.should_keep_alive() and not self.closed
        if reusable:
            self.idle_since = time.monotonic()
            if self.paused:  # idle in the pool it must read: to answer the next request, to notice a close
                self.resume_reading()
            self.pool.append(self)
        else:
            self.close()
        if client is not None:
            client.response_done()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self in self.pool:
            self.pool.remove(self)
        self._lost()

    def _lost(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        if self.head_seen and not self.framed:
            client.response_done()  # a body delimited by the connection's end is complete now
        else:
            client.upstream_failed(before_head=not self.head_seen)
        self.close()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self.paused:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Exchange:
    """One request the fast path relays, from the decision to take it to the end of its answer."""

    __slots__ = ("route", "touch", "acquired", "method", "url", "inspected", "request_id", "upstream_head",
                 "close_after", "upstream", "started_at", "head_sent", "rechunk")

    def __init__(self, route: Route, touch: bool, method: bytes, url: bytes, inspected: dict[bytes, bytes],
                 request_id: bytes, upstream_head: bytes, close_after: bool) -> None:
        self.route = route
        self.touch = touch
        self.acquired = True  # counted in flight by the route's lifecycle until FastProtocol.finish
        self.method = method
        self.url = url
        self.inspected = inspected
        self.request_id = request_id
        self.upstream_head = upstream_head
        self.close_after = close_after
        self.upstream: UpstreamConnection | None = None
        self.started_at = 0.0
        self.head_sent = False
        self.rechunk = False  # the service's framing was undone by the parser: chunk it again for the client


class FastProtocol(asyncio.Protocol):
    """A client connection. Relays plain requests itself; hands anything else to the full path."""

    def __init__(self, fast: FastPath) -> None:
        self.fast = fast
        self.transport: asyncio.Transport | None = None
        # The request being read: its target, and its headers read by the forwarding policy as they are parsed
        # (httptools calls `on_header`, bound here once per connection, for each one).
        self.url = b""
        self.headers = RequestHeaders()
        self.on_header = self.headers.add
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b"unknown"
        self.raw: list[bytes] = []  # bytes since the current request began, to replay on a hand-off
        self.pending: list[bytes] = []  # response bytes not yet written to the client (see flush)
        self.fresh_chunk = False
        self.replayable = True
        self.handing_off = False
        self.pipelined = False
        self.last_active = 0.0
        self.admitted: Exchange | None = None  # taken by the fast path, its body (none) still being read
        self.exchange: Exchange | None = None  # being relayed

    # -- client side: parsing and the decision -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last_active = time.monotonic()
        self.fast.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0] if peer else "unknown").encode()

    def data_received(self, data: bytes) -> None:
        if self.exchange is not None:
            # A next request before this one is answered (pipelining): not served here; the connection is
            # closed after this response and the client sends it again. Reading goes on so that a client
            # that goes away is noticed at once.
            self.pipelined = True
            return
        self.fresh_chunk = True
        self.last_active = time.monotonic()
        self.raw.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.handing_off = True
        except httptools.HttpParserError:
            if self.exchange is None:
                self.handing_off = True  # the full path answers it in JSON (400/414/431)
            else:
                self.exchange.close_after = True
        if self.handing_off and self.exchange is None:
            self._hand_off()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers.clear()  # new containers: the exchange in flight keeps its own
        if self.exchange is not None:
            self.pipelined = True  # a second request in the same chunk: not served here (see data_received)
        if self.handing_off or self.pipelined:
            return
        # Replaying is exact only if this request starts a chunk (no earlier request's tail in front of it).
        self.replayable = self.fresh_chunk
        if self.fresh_chunk:
            self.raw = self.raw[-1:]
        self.fresh_chunk = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        self.fresh_chunk = False
        if self.handing_off or self.pipelined:
            return
        self.admitted = self._admit()
        if self.admitted is None:
            self.handing_off = True

    def on_body(self, body: bytes) -> None:
        self.fresh_chunk = False

    def on_message_complete(self) -> None:
        self.fresh_chunk = False
        admitted, self.admitted = self.admitted, None
        if admitted is not None:
            if self.handing_off:
                self._finish(admitted)
            else:
                self._dispatch(admitted)

    def _admit(self) -> Exchange | None:
        """The exchange when this request is relayed here (its service then counts it in flight), else None."""
        parser = self.parser
        method = parser.get_method()
        headers = self.headers
        inspected = headers.inspected
        url = self.url
        if (headers.repeated or method not in FAST_METHODS or parser.get_http_version() != "1.1"
                or parser.should_upgrade() or headers.size > MAX_HEADER_BYTES or url[:1] != b"/"
                or url.startswith(_STATUS_PREFIX) or b"content-length" in inspected
                or b"transfer-encoding" in inspected or b"expect" in inspected):
            return None  # a body, 100-continue, an upgrade, a repeated Host…: the full path
        host_header = inspected.get(b"host")
        if host_header is None:
            return None
        fast = self.fast
        host = fast.host_names.get(host_header)
        route = fast.table.by_host.get(host if host is not None else fast.host_name(host_header))
        if route is None:
            return None
        touch = route.ignored_agents is None or not route.ignores(inspected.get(b"user-agent"))
        if not route.lifecycle.try_acquire(touch=touch):
            return None  # asleep or starting: the full path wakes it and waits
        connection = inspected.get(b"connection")
        rid = request_id(inspected.get(b"x-request-id"))
        head = b"%s %s HTTP/1.1\r\n%s\r\n" % (method, url, b"".join(headers.lines(self.peer, rid)))
        return Exchange(route, touch, method, url, inspected, rid, head,
                        fast.draining or (connection is not None and b"close" in connection.lower()))

    # -- relaying ---------------------------------------------------------------------------------

    def _dispatch(self, exchange: Exchange) -> None:
        route = exchange.route
        self.exchange = exchange
        exchange.started_at = now = time.monotonic()
        pool = self.fast.pools.get(route.base_url) or self.fast.pool(route)
        while pool:
            upstream = pool.pop()
            if not upstream.closed and now - upstream.idle_since < UPSTREAM_IDLE_SECONDS:
                exchange.upstream = upstream
                upstream.send(exchange.upstream_head, self)
                return
            upstream.close()
        asyncio.ensure_future(self._connect(exchange, route, pool))

    async def _connect(self, exchange: Exchange, route: Route, pool: list[UpstreamConnection]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(
                lambda: UpstreamConnection(pool), route.service.upstream_host, route.service.proxy_port
            )
        except OSError:
            # Refused: maybe stopped from outside. The full path checks, wakes and retries, or answers 502.
            self._finish(exchange)
            if self.replayable and not self.pipelined and self.transport is not None and not self.transport.is_closing():
                self._hand_off()
            else:
                self._answer(route, unreachable(route.service.name, CONNECTION_REFUSED))
            return
        if self.exchange is not exchange or self.transport is None or self.transport.is_closing():
            upstream.close()
            return
        exchange.upstream = upstream
        upstream.send(exchange.upstream_head, self)

    def response_head(self, status: int, reason: bytes, head_lines: list[bytes], has_length: bool) -> None:
        exchange = self.exchange
        assert exchange is not None and self.transport is not None
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason), *head_lines]
        # The service's own chunking was undone by the parser (Transfer-Encoding is hop-by-hop): re-frame.
        exchange.rechunk = status not in _NO_BODY_STATUS and not has_length
        if exchange.rechunk:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if self.fast.draining:
            exchange.close_after = True  # shutting down: the next request goes to a new connection (a new proxy)
        if exchange.close_after or self.pipelined:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        self.pending.append(b"".join(lines))
        exchange.head_sent = True
        service = exchange.route.service.name
        self.fast.metrics.count_request(service, status)
        if self.fast.table.access_log:
            log.info("request", extra={
                "service": service, "requestId": exchange.request_id.decode("latin-1"),
                "method": exchange.method.decode(), "path": exchange.url.split(b"?", 1)[0].decode("latin-1"),
                "status": status, "userAgent": exchange.inspected.get(b"user-agent", b"").decode("latin-1"),
                "fastPath": True,
            })

    def response_body(self, body: bytes) -> None:
        exchange = self.exchange
        if self.transport is None or exchange is None:
            return
        if exchange.rechunk:
            self.pending += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.pending.append(body)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if self.transport is not None and pending:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def response_done(self) -> None:
        exchange = self.exchange
        if self.transport is None or exchange is None:
            return
        if exchange.rechunk:
            self.pending.append(b"0\r\n\r\n")
        # The upstream connection is back in its pool: this last write must not pause it (flow control).
        exchange.upstream = None
        self.flush()
        self._finish(exchange)
        if exchange.close_after or self.pipelined:
            self.transport.close()
        else:
            self.raw = []
            self.replayable = True
            self.last_active = time.monotonic()

    def upstream_failed(self, before_head: bool) -> None:
        # Never sent again, not even on a reused keep-alive connection: the service may have read the request
        # and died handling it (a GET that crashes it would run twice). Only a refused connect is replayed.
        exchange = self.exchange
        if exchange is None:
            return
        route = exchange.route
        log.warning("upstream failed", extra={
            "service": route.service.name, "requestId": exchange.request_id.decode("latin-1"),
            "reason": CONNECTION_RESET, "detail": "before the response" if before_head else "during the response",
            "fastPath": True,
        })
        route.lifecycle.upstream_failed()
        self._finish(exchange)
        if before_head:
            self._answer(route, unreachable(route.service.name, CONNECTION_RESET))
        elif self.transport is not None:
            self.flush()
            self.transport.close()  # the response had begun: cutting the connection is the only signal left

    def _timed_out(self, exchange: Exchange, route: Route) -> None:
        log.warning("upstream timed out", extra={
            "service": route.service.name, "requestId": exchange.request_id.decode("latin-1"),
            "timeout": route.service.request_timeout, "fastPath": True,
        })
        upstream, exchange.upstream = exchange.upstream, None
        if upstream is not None:
            upstream.client = None
            upstream.close()
        self._finish(exchange)
        if exchange.head_sent:
            if self.transport is not None:
                self.transport.close()
        else:
            self._answer(route, not_answered(route.service.name, route.service.request_timeout))

    def _finish(self, exchange: Exchange) -> None:
        """The request is over (answered, failed or abandoned): its service no longer counts it in flight."""
        if exchange.acquired:
            exchange.acquired = False
            exchange.route.lifecycle.release(touch=exchange.touch)
        exchange.upstream = None
        if self.exchange is exchange:
            self.exchange = None

    def _answer(self, route: Route, answer: Answer) -> None:
        """One of the proxy's own answers, the connection closed after it (forwarding.py says what and how)."""
        if self.transport is None or self.transport.is_closing():
            return
        self.fast.metrics.count_request(route.service.name, answer.status)
        self.transport.write(answer.http11())
        if answer.close:
            self.transport.close()

    def _hand_off(self) -> None:
        """Give the connection, and the bytes of the current request, to the full path's aiohttp handler."""
        transport = self.transport
        if transport is None:
            return
        for taken in (self.admitted, self.exchange):
            if taken is not None:
                self._finish(taken)
        self.admitted = None
        if not self.replayable:
            # An earlier request's tail shares the buffer: the bytes cannot be replayed exactly.
            transport.close()
            return
        self.fast.connections.discard(self)
        handler = self.fast.handoff()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        data = b"".join(self.raw)
        self.raw = []
        self.transport = None
        if data:
            handler.data_received(data)
        transport.resume_reading()

    def pause_writing(self) -> None:
        if self.exchange is not None and self.exchange.upstream is not None:
            self.exchange.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None and self.exchange.upstream is not None:
            self.exchange.upstream.resume_reading()

    def sweep(self, idle_seconds: float, now: float) -> None:
        """Close an idle keep-alive connection; end a request past requestTimeout."""
        if self.transport is None:
            return
        exchange = self.exchange
        if exchange is not None:
            if now - exchange.started_at > exchange.route.service.request_timeout:
                self._timed_out(exchange, exchange.route)
        elif now - self.last_active > idle_seconds:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fast.connections.discard(self)
        if self.transport is None:
            return  # handed off: aiohttp owns it now
        self.transport = None
        if self.admitted is not None:
            self._finish(self.admitted)
        exchange = self.exchange
        if exchange is not None:
            upstream = exchange.upstream
            if upstream is not None:
                upstream.client = None
                upstream.close()  # the client went away: the upstream request is cancelled
            self._finish(exchange)
