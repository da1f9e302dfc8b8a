"""The fast path: plain requests to a service that is up, relayed at the protocol level (httptools parsers,
pooled keep-alive upstream connections, no per-request task or framework objects).

Chosen by measurement (bench/bench_autostart.py, 2 shared cores): through aiohttp's server and client a
proxied request cost ~190 µs of CPU and reached 0.2 × direct throughput with +10 ms p50; relayed here it costs
~30-35 µs (docs/benchmarks.md has the current figures), most of it the event loop and the unavoidable socket
calls (a read and a write on each side), so each upstream read goes to the client in one write.

It takes only what it can relay exactly: HTTP/1.1 GET/DELETE/OPTIONS without a body, no Upgrade, no Expect,
headers within the limit, to a known host whose service is ready. Everything else — starts and waits,
request bodies (uploads), WebSockets, HEAD, HTTP/1.0, unknown hosts, the status pages, malformed requests —
is handed, with the bytes received so far, to the aiohttp handler (proxy.py), which then owns the connection.
Responses of any size and framing stream back as they arrive (SSE included), with flow control.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from .proxy import HOP_BY_HOP, STATUS_PREFIX, new_request_id, parse_host

if TYPE_CHECKING:
    from aiohttp.web_protocol import RequestHandler

    from .proxy import Proxy, Route

log = logging.getLogger("autostart.proxy")

FAST_METHODS = frozenset({b"GET", b"DELETE", b"OPTIONS"})
MAX_HEADER_BYTES = 16 * 1024
UPSTREAM_IDLE_SECONDS = 4.0  # below uvicorn's 5 s keep-alive, so the upstream never closes one under us
_HOP = frozenset(h.encode() for h in HOP_BY_HOP)
_DROP_REQUEST = _HOP | {b"expect", b"x-forwarded-for", b"x-request-id"}
_UNSUPPORTED = frozenset({b"content-length", b"transfer-encoding", b"expect"})
# Headers the decision or the forwarded head needs, collected while parsing (one pass over the headers).
_SPECIAL = _UNSUPPORTED | {b"host", b"user-agent", b"connection", b"x-forwarded-for", b"x-forwarded-proto",
                           b"x-forwarded-host", b"x-request-id"}
_STATUS_PREFIX = STATUS_PREFIX.encode()
_NO_BODY_STATUS = frozenset({204, 304})


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
        if lowered in _HOP:
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
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class FastProtocol(asyncio.Protocol):
    """A client connection. Relays plain requests itself; hands anything else to aiohttp."""

    def __init__(self, proxy: Proxy, handoff: Callable[[], RequestHandler]) -> None:
        self.proxy = proxy
        self.handoff_factory = handoff
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b"unknown"
        self.raw: list[bytes] = []  # bytes since the current request began, to replay on a hand-off
        self.pending: list[bytes] = []  # response bytes not yet written to the client (see flush)
        self.fresh_chunk = False
        self.replayable = True
        self.handing_off = False
        self.pipelined = False
        self.dispatched = False
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.route: Route | None = None
        self.touch = True
        self.upstream_head = b""
        self.upstream: UpstreamConnection | None = None
        self.acquired = False
        self.head_sent = False
        self.rechunk = False
        self.close_after = False
        self.special: dict[bytes, bytes] = {}
        self.unsupported = False
        self.request_id = b""
        self.started_at = 0.0
        self.last_active = 0.0

    # -- client side: parsing and the decision -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last_active = time.monotonic()
        self.proxy.fast_connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0] if peer else "unknown").encode()

    def data_received(self, data: bytes) -> None:
        if self.dispatched:
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
            if not self.dispatched:
                self.handing_off = True  # aiohttp answers it in JSON (400/414/431)
            else:
                self.close_after = True
        if self.handing_off and not self.dispatched:
            self._hand_off()

    def on_message_begin(self) -> None:
        if self.dispatched:
            self.pipelined = True  # a second request in the same chunk: not served here (see data_received)
        if self.handing_off or self.pipelined:
            return
        # Replaying is exact only if this request starts a chunk (no earlier request's tail in front of it).
        self.replayable = self.fresh_chunk
        if self.fresh_chunk:
            self.raw = self.raw[-1:]
        self.fresh_chunk = False
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.special = {}
        self.unsupported = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        lowered = name.lower()
        if lowered in _SPECIAL:
            if lowered in _UNSUPPORTED or lowered in self.special:
                self.unsupported = True  # a body, 100-continue, or a repeated Host/Connection: the full path
            self.special[lowered] = value
        if lowered not in _DROP_REQUEST:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.fresh_chunk = False
        if self.handing_off or self.pipelined:
            return
        route = self._fast_route()
        if route is None:
            self.handing_off = True
            return
        self.route = route

    def on_body(self, body: bytes) -> None:
        self.fresh_chunk = False

    def on_message_complete(self) -> None:
        self.fresh_chunk = False
        if self.handing_off or self.pipelined or self.dispatched or self.route is None:
            return
        self._dispatch()

    def _fast_route(self) -> Route | None:
        """The route when this request can be relayed here, else None (hand it off)."""
        parser = self.parser
        special = self.special
        if (self.unsupported or parser.get_method() not in FAST_METHODS or parser.get_http_version() != "1.1"
                or parser.should_upgrade() or self.header_bytes > MAX_HEADER_BYTES or self.url[:1] != b"/"
                or self.url.startswith(_STATUS_PREFIX)):
            return None
        host_header = special.get(b"host")
        if host_header is None:
            return None
        host = self.proxy.host_cache.get(host_header)
        if host is None:
            host = parse_host(host_header.decode("latin-1")) or ""
            if len(self.proxy.host_cache) < 1024:
                self.proxy.host_cache[host_header] = host
        route = self.proxy.routes.get(host)
        if route is None:
            return None
        agent = special.get(b"user-agent")
        touch = route.ignored_agents is None or not route.ignored_agents.search(agent.decode("latin-1") if agent else "")
        if not route.lifecycle.try_acquire(touch=touch):
            return None  # asleep or starting: the full path wakes it and waits
        self.touch = touch
        self.acquired = True
        connection = special.get(b"connection")
        if connection is not None and b"close" in connection.lower():
            self.close_after = True
        self.upstream_head = self._upstream_head(connection)
        return route

    def _upstream_head(self, connection: bytes | None) -> bytes:
        special = self.special
        headers = self.headers
        if connection is not None:
            listed = {t.strip().lower() for t in connection.split(b",")} - {b"close", b"keep-alive"}
            if listed:
                headers = [(n, v) for n, v in headers if n.lower() not in listed]
        lines = [self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in headers:
            lines += [name, b": ", value, b"\r\n"]
        forwarded_for = special.get(b"x-forwarded-for")
        lines += [b"X-Forwarded-For: ", forwarded_for + b", " + self.peer if forwarded_for else self.peer, b"\r\n"]
        if b"x-forwarded-proto" not in special:
            lines.append(b"X-Forwarded-Proto: http\r\n")
        if b"x-forwarded-host" not in special:
            lines += [b"X-Forwarded-Host: ", special.get(b"host", b""), b"\r\n"]
        request_id = special.get(b"x-request-id")
        if not request_id or len(request_id) > 128:
            request_id = new_request_id().encode()
        self.request_id = request_id
        lines += [b"X-Request-ID: ", request_id, b"\r\n\r\n"]
        return b"".join(lines)

    # -- relaying ---------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        route = self.route
        assert route is not None and self.transport is not None
        self.dispatched = True
        self.head_sent = False
        self.started_at = now = time.monotonic()
        pool = self.proxy.upstream_pool(route)
        while pool:
            upstream = pool.pop()
            if not upstream.closed and now - upstream.idle_since < UPSTREAM_IDLE_SECONDS:
                self.upstream = upstream
                upstream.send(self.upstream_head, self)
                return
            upstream.close()
        asyncio.ensure_future(self._connect(route, pool))

    async def _connect(self, route: Route, pool: list[UpstreamConnection]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(
                lambda: UpstreamConnection(pool), route.service.upstream_host, route.service.proxy_port
            )
        except OSError:
            # Refused: maybe stopped from outside. The full path checks, wakes and retries, or answers 502.
            self._finish_request()
            if self.replayable and not self.pipelined and self.transport is not None and not self.transport.is_closing():
                self._hand_off()
            else:
                name = route.service.name.encode()
                self._error(502, b'{"error": "%s is unreachable: connection refused", "service": "%s"}' % (name, name))
            return
        if not self.dispatched or self.transport is None or self.transport.is_closing():
            upstream.close()
            return
        self.upstream = upstream
        upstream.send(self.upstream_head, self)

    def response_head(self, status: int, reason: bytes, head_lines: list[bytes], has_length: bool) -> None:
        assert self.route is not None and self.transport is not None
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason), *head_lines]
        # The service's own chunking was undone by the parser (Transfer-Encoding is hop-by-hop): re-frame.
        self.rechunk = status not in _NO_BODY_STATUS and not has_length
        if self.rechunk:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if self.close_after or self.pipelined:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        self.pending.append(b"".join(lines))
        self.head_sent = True
        self.proxy.metrics.count_request(self.route.service.name, status)
        if self.proxy.access_log:
            log.info("request", extra={
                "service": self.route.service.name, "requestId": self.request_id.decode("latin-1"),
                "method": self.parser.get_method().decode(), "path": self.url.split(b"?", 1)[0].decode("latin-1"),
                "status": status, "userAgent": self.special.get(b"user-agent", b"").decode("latin-1"), "fastPath": True,
            })

    def response_body(self, body: bytes) -> None:
        if self.transport is None:
            return
        if self.rechunk:
            self.pending += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.pending.append(body)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if self.transport is not None and pending:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def response_done(self) -> None:
        if self.transport is None:
            return
        if self.rechunk:
            self.pending.append(b"0\r\n\r\n")
        self.flush()
        self.upstream = None
        self._finish_request()
        if self.close_after or self.pipelined:
            self.transport.close()
        else:
            self.raw = []
            self.replayable = True
            self.route = None
            self.last_active = time.monotonic()

    def upstream_failed(self, before_head: bool) -> None:
        # Never sent again, not even on a reused keep-alive connection: the service may have read the request
        # and died handling it (a GET that crashes it would run twice). Only a refused connect is replayed.
        self.upstream = None
        name = self.route.service.name if self.route else "?"
        log.warning("upstream failed", extra={
            "service": name, "requestId": self.request_id.decode("latin-1"),
            "reason": "connection reset by the service", "detail": "before the response" if before_head
            else "during the response", "fastPath": True,
        })
        if self.route is not None:
            self.route.lifecycle.upstream_failed()
        self._finish_request()
        if before_head:
            encoded = name.encode()
            self._error(502, b'{"error": "%s is unreachable: connection reset by the service", "service": "%s"}'
                        % (encoded, encoded))
        elif self.transport is not None:
            self.flush()
            self.transport.close()  # the response had begun: cutting the connection is the only signal left

    def _timed_out(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.client = None
            upstream.close()
        name = self.route.service.name if self.route else "?"
        timeout = self.route.service.request_timeout if self.route else 0
        head_sent = self.head_sent
        self._finish_request()
        if head_sent:
            if self.transport is not None:
                self.transport.close()
        else:
            self._error(504, b'{"error": "%s did not answer within %gs", "service": "%s"}'
                        % (name.encode(), timeout, name.encode()))

    def _finish_request(self) -> None:
        if self.acquired and self.route is not None:
            self.acquired = False
            self.route.lifecycle.release(touch=self.touch)
        self.dispatched = False

    def _error(self, status: int, body: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.route is not None:
            self.proxy.metrics.count_request(self.route.service.name, status)
        phrase = {502: b"Bad Gateway", 504: b"Gateway Timeout"}.get(status, b"Error")
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%b" % (status, phrase, len(body), body))
        self.transport.close()

    def _hand_off(self) -> None:
        """Give the connection, and the bytes of the current request, to the aiohttp handler."""
        transport = self.transport
        if transport is None:
            return
        if self.acquired:
            self._finish_request()
        if not self.replayable:
            # An earlier request's tail shares the buffer: the bytes cannot be replayed exactly.
            transport.close()
            return
        self.proxy.fast_connections.discard(self)
        handler = self.handoff_factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        data = b"".join(self.raw)
        self.raw = []
        self.transport = None
        if data:
            handler.data_received(data)
        transport.resume_reading()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def close_if_idle(self) -> None:
        if not self.dispatched and self.transport is not None:
            self.transport.close()

    def sweep(self, idle_seconds: float, now: float) -> None:
        """Run by the supervisor: close an idle keep-alive connection, end a request past requestTimeout."""
        if self.transport is None:
            return
        if self.dispatched:
            if self.route is not None and now - self.started_at > self.route.service.request_timeout:
                self._timed_out()
        elif now - self.last_active > idle_seconds:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.fast_connections.discard(self)
        if self.transport is None:
            return  # handed off: aiohttp owns it now
        self.transport = None
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.client = None
            upstream.close()  # the client went away: the upstream request is cancelled
        self._finish_request()
