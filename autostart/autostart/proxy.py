"""The hot path: route by Host, let the lifecycle admit the request, stream it to the service and back.

aiohttp's low-level server (C parser, no router) and one shared ClientSession with a keep-alive pool to
every upstream; bodies are streamed chunk by chunk in both directions, never held whole. Domain errors are
turned into HTTP responses here and nowhere else. Nothing is formatted or logged for a request that goes
well unless the access log is on.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .config import AutostartConfig, ServiceConfig
from .errors import ServiceFailed, StartFailed, StartTimeout, TooManyWaiting
from .lifecycle import ServiceLifecycle
from .pages import REFRESH_SECONDS, starting_page
from .status import Metrics, status_document

log = logging.getLogger("autostart.proxy")

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
     "trailer", "transfer-encoding", "upgrade"}
)
WEBSOCKET_MAX_MESSAGE_BYTES = 32 * 2**20
"""aiohttp gathers a whole WebSocket message before relaying it: bounded, so one client cannot exhaust the memory of
the proxy in front of every service (above the services' own 24 MiB limit, so they answer the too-large ones)."""
WEBSOCKET_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
# aiohttp's client would add these when the client did not send them; a proxy must not.
SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
_HOST = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?$")
STATUS_PREFIX = "/_autostart/"
_REQUEST_ID = "autostart.request_id"
RETRY_AFTER_STARTING = 5
STREAM_CHUNK = 256 * 1024
SMALL_BODY = 64 * 1024


@dataclass
class Route:
    """One service as the hot path needs it, computed once at start-up."""

    host: str
    service: ServiceConfig
    lifecycle: ServiceLifecycle
    base_url: str
    timeout: aiohttp.ClientTimeout
    ignored_agents: re.Pattern[str] | None = None
    retry_after: str = field(default="")

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

    def ignores(self, request: web.BaseRequest) -> bool:
        return self.ignored_agents is not None and bool(
            self.ignored_agents.search(request.headers.get("User-Agent", ""))
        )


def json_response(status: int, body: Mapping[str, Any], *, retry_after: str | None = None,
                  close: bool = False) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if retry_after:
        headers["Retry-After"] = retry_after
    response = web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)
    if close:
        response.force_close()
    return response


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


_REQUEST_ID_PREFIX = os.urandom(4).hex()
_request_numbers = itertools.count(1)


def new_request_id() -> str:
    """16 hex digits: this process's random prefix and a counter (unique here, and no system call per request)."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers) & 0xFFFFFFFF:08x}"


def request_id(request: web.BaseRequest) -> str:
    """The client's X-Request-ID when it is sane, else a new one; the same for the whole request (and the
    service's logs, which read the header we forward)."""
    known = request.get(_REQUEST_ID)
    if known is None:
        given = request.headers.get("X-Request-ID", "")
        known = given if 0 < len(given) <= 128 and given.isascii() and given.isprintable() else new_request_id()
        request[_REQUEST_ID] = known
    return known


class Proxy:
    def __init__(self, config: AutostartConfig, lifecycles: Mapping[str, ServiceLifecycle], metrics: Metrics) -> None:
        self.config = config
        self.lifecycles = lifecycles
        self.metrics = metrics
        self.routes = {
            host: Route.build(host, service, lifecycles[host], config.ignore_user_agents)
            for host, service in config.services.items()
        }
        self.status_hosts = frozenset(h.lower() for h in config.status_hosts)
        self.access_log = config.access_log
        self.session: aiohttp.ClientSession | None = None
        self._upstream_pools: dict[str, list[Any]] = {host: [] for host in self.routes}
        self.fast_connections: set[Any] = set()  # fastpath.FastProtocol connections, closed at shutdown
        self.host_cache: dict[bytes, str] = {}  # raw Host header → host name, for the fast path

    def upstream_pool(self, route: Route) -> list[Any]:
        """Idle keep-alive connections of the fast path to this route's service."""
        return self._upstream_pools[route.host]

    async def open(self) -> None:
        # Idle pooled connections are closed before uvicorn's own 5 s keep-alive expiry closes them under us.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=4, ttl_dns_cache=60)
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None), skip_auto_headers=SKIP_AUTO_HEADERS,
            read_bufsize=STREAM_CHUNK,
        )
        # aiohttp sends an idempotent request (GET, PUT, DELETE…) once more when the connection drops before the
        # response: a GET that crashed the service would run twice, and a killed service would be restarted to
        # answer it. A proxy must not: once sent, a request is answered 502 (only a refused connect is retried,
        # in handle()). There is no public switch; tests/autostart/test_faults.py fails if this stops working.
        if not hasattr(self.session, "_retry_connection"):
            raise RuntimeError("aiohttp no longer has ClientSession._retry_connection: check its retry behaviour")
        self.session._retry_connection = False

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    # -- routing and admission -------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        host = parse_host(request.headers.get("Host"))
        if host is None:
            return json_response(400, {"error": "missing or malformed Host header"}, close=True)
        route = self.routes.get(host)
        if route is None:
            if request.raw_path.startswith(STATUS_PREFIX) and self._may_see_status(request, host):
                return self._status(request)
            return json_response(404, {"error": "unknown host", "host": host})
        if not request.raw_path.startswith("/"):
            return self._count(route, json_response(400, {"error": "request target must be a path", "service": route.service.name}))

        lifecycle = route.lifecycle
        touch = not route.ignores(request)
        for attempt in (1, 2):
            if not lifecycle.try_acquire(touch=touch):
                refusal = await self._admit(request, route, touch)
                if refusal is not None:
                    return self._count(route, refusal)
            try:
                response = await self._forward(request, route, may_retry=attempt == 1 and touch)
            except _ServiceGone:
                continue  # it was stopped from outside: admit again, which wakes it
            finally:
                lifecycle.release(touch=touch)
            return self._count(route, response, request)
        raise AssertionError("unreachable: the second attempt never raises _ServiceGone")

    async def _admit(self, request: web.BaseRequest, route: Route, touch: bool) -> web.StreamResponse | None:
        """Wait for (or kick off) the wake; return a response when the request cannot go through now."""
        name = route.service.name
        if not touch:
            return json_response(
                503, {"error": "service is asleep; this User-Agent does not wake it", "service": name},
                retry_after=route.retry_after,
            )
        if not route.service.blocking:
            route.lifecycle.wake()
            return self._starting(request, route)
        try:
            await route.lifecycle.acquire()
        except StartTimeout as exc:
            return json_response(
                504,
                {"error": f"{name} did not become ready within {exc.timeout:g}s", "service": name,
                 "waited": round(exc.waited, 3), "state": route.lifecycle.state.value},
                retry_after=route.retry_after,
            )
        except TooManyWaiting as exc:
            return json_response(503, {"error": exc.message, "service": name}, retry_after=route.retry_after)
        except ServiceFailed as exc:
            # The service said why it cannot start (e.g. its model cannot be loaded): a 503 with that reason, and
            # Retry-After for when the proxy will try again.
            log.warning("request refused: the service cannot start",
                        extra={"service": name, "requestId": request_id(request), "reason": exc.message})
            retry = math.ceil(route.lifecycle.backoff_left()) or int(route.retry_after or 1)
            return json_response(503, {"error": f"{name} cannot start: {exc.message}", "service": name,
                                       "state": route.lifecycle.state.value, "retryAfterSeconds": retry},
                                 retry_after=str(retry))
        except StartFailed as exc:
            log.warning("request refused: start failed",
                        extra={"service": name, "requestId": request_id(request), "reason": exc.message})
            return json_response(502, {"error": f"could not start {name}: {exc.message}", "service": name},
                                 retry_after=route.retry_after)
        return None

    def _starting(self, request: web.BaseRequest, route: Route) -> web.Response:
        name = route.service.name
        if "text/html" in request.headers.get("Accept", ""):
            return web.Response(
                status=503, text=starting_page(name), content_type="text/html",
                headers={"Retry-After": str(REFRESH_SECONDS), "Cache-Control": "no-store"},
            )
        body: dict[str, Any] = {"error": f"{name} is starting; retry shortly", "service": name,
                                "state": route.lifecycle.state.value}
        if route.lifecycle.last_error:
            body["lastError"] = route.lifecycle.last_error
        return json_response(503, body, retry_after=route.retry_after)

    def _count(self, route: Route, response: web.StreamResponse, request: web.BaseRequest | None = None) -> web.StreamResponse:
        self.metrics.count_request(route.service.name, response.status)
        if self.access_log and request is not None:
            log.info("request", extra={
                "service": route.service.name, "requestId": request_id(request), "method": request.method,
                "path": request.path, "status": response.status, "userAgent": request.headers.get("User-Agent"),
            })
        return response

    # -- forwarding ----------------------------------------------------------------------------------

    def _upstream_headers(self, request: web.BaseRequest) -> CIMultiDict[str]:
        incoming: CIMultiDictProxy[str] = request.headers
        connection_tokens = {t.strip().lower() for t in incoming.get("Connection", "").split(",") if t.strip()}
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in incoming.items():
            lowered = name.lower()
            if lowered in HOP_BY_HOP or lowered in connection_tokens or lowered == "expect":
                continue
            headers.add(name, value)
        headers["X-Request-ID"] = request_id(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        client_ip = peer[0] if peer else "unknown"
        previous = incoming.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{previous}, {client_ip}" if previous else client_ip
        if "X-Forwarded-Proto" not in headers:
            headers["X-Forwarded-Proto"] = request.scheme
        if "X-Forwarded-Host" not in headers:
            headers["X-Forwarded-Host"] = incoming.get("Host", "")
        return headers

    async def _forward(self, request: web.BaseRequest, route: Route, may_retry: bool) -> web.StreamResponse:
        assert self.session is not None, "Proxy.open() not called"
        headers = self._upstream_headers(request)
        url = URL(route.base_url + request.raw_path, encoded=True)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, route, url, headers)
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        response: web.StreamResponse | None = None
        try:
            async with self.session.request(
                request.method, url, headers=headers, data=request.content if request.body_exists else None,
                allow_redirects=False, timeout=route.timeout, compress=False,
            ) as upstream:
                response_headers = CIMultiDict(
                    (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                )
                length = upstream.content_length
                if length is not None and length <= SMALL_BODY and request.method != "HEAD":
                    # Small and complete: one write of head and body instead of a streamed exchange.
                    body = await upstream.read()
                    response_headers.popall("Content-Length", None)
                    return web.Response(status=upstream.status, reason=upstream.reason, headers=response_headers,
                                        body=body)
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=response_headers)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientConnectorError as exc:
            # Refused before a byte of the body was read, so the request can go again once the service is up.
            if may_retry and not await route.lifecycle.verify_running():
                raise _ServiceGone from exc
            return self._upstream_failed(request, route, response, "connection refused", exc)
        except asyncio.TimeoutError as exc:
            if response is not None:
                raise _abort(request) from exc
            return json_response(504, {"error": f"{route.service.name} did not answer within "
                                                f"{route.service.request_timeout:g}s", "service": route.service.name})
        except (aiohttp.ClientError, ConnectionResetError) as exc:
            return self._upstream_failed(request, route, response, "connection reset by the service", exc)

    def _upstream_failed(self, request: web.BaseRequest, route: Route, response: web.StreamResponse | None,
                         what: str, exc: BaseException) -> web.StreamResponse:
        name = route.service.name
        log.warning("upstream failed", extra={"service": name, "requestId": request_id(request), "reason": what,
                                                "detail": f"{type(exc).__name__}: {exc}"})
        route.lifecycle.upstream_failed()
        if response is not None and response.prepared:
            raise _abort(request) from exc
        return json_response(502, {"error": f"{name} is unreachable: {what}", "service": name})

    async def _websocket(self, request: web.BaseRequest, route: Route, url: URL,
                         headers: CIMultiDict[str]) -> web.StreamResponse:
        assert self.session is not None
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        for name in list(headers):
            if name.lower() in WEBSOCKET_HANDSHAKE:
                headers.popall(name, None)
        try:
            upstream = await self.session.ws_connect(
                url, headers=headers, protocols=protocols, autoping=True, max_msg_size=WEBSOCKET_MAX_MESSAGE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=10),
            )
        except aiohttp.WSServerHandshakeError as exc:
            return json_response(exc.status if 400 <= exc.status < 600 else 502,
                                 {"error": f"{route.service.name} refused the WebSocket upgrade",
                                  "service": route.service.name})
        except (aiohttp.ClientError, OSError) as exc:
            return self._upstream_failed(request, route, None, "connection refused", exc)
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (),
                                       autoping=True, max_msg_size=WEBSOCKET_MAX_MESSAGE_BYTES)
        async with upstream:
            await client.prepare(request)
            pumps = [asyncio.create_task(_pump(upstream, client)), asyncio.create_task(_pump(client, upstream))]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
            if not client.closed:
                await client.close(code=upstream.close_code or aiohttp.WSCloseCode.OK)
        return client

    # -- status ----------------------------------------------------------------------------------------

    def _may_see_status(self, request: web.BaseRequest, host: str) -> bool:
        if host in self.status_hosts:
            return True
        peer = request.transport.get_extra_info("peername") if request.transport else None
        try:
            return bool(peer) and ipaddress.ip_address(peer[0]).is_loopback
        except ValueError:
            return False

    def _status(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return json_response(405, {"error": "method not allowed"})
        if request.path == "/_autostart/status":
            return json_response(200, status_document(self.lifecycles))
        if request.path == "/_autostart/metrics":
            return web.Response(body=self.metrics.exposition(),
                                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
        if request.path == "/_autostart/health":
            return json_response(200, {"status": "ok"})
        return json_response(404, {"error": "not found", "path": request.path})


async def _pump(source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
    async for message in source:
        if message.type is WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type is WSMsgType.ERROR:
            break
    if not sink.closed:
        await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)


class _ServiceGone(Exception):
    """The upstream refused the connection and the provider says the service no longer runs."""


def _abort(request: web.BaseRequest) -> ConnectionResetError:
    """The response has begun: the only honest signal left is to cut the client's connection."""
    if request.transport is not None:
        request.transport.close()
    return ConnectionResetError("upstream failed after the response had started")


_PARSE_ERRORS = {
    400: "the request could not be parsed as HTTP/1.1",
    414: "the request line is too long",
    431: "a request header is too long",
}


# What the parser's complaint is about, from the first line of its message (named by us, never quoted from it).
_FRAMING_PROBLEMS = (
    (("content-length", "transfer-encoding"), "Content-Length and Transfer-Encoding must not be sent together"),
    (("duplicate", "content-length"), "Content-Length is sent more than once"),
    (("content-length",), "Content-Length must be a non-negative whole number"),
    (("transfer-encoding",), "Transfer-Encoding must be chunked (and only once)"),
    (("chunk",), "the chunked body is malformed"),
    (("header",), "a header is malformed"),
)


def _parse_error_detail(status: int, exc: BaseException | None) -> str:
    if isinstance(exc, BadHttpMethod):
        return "unknown HTTP method (TLS or non-HTTP traffic?)"
    if status == 400 and exc is not None:
        complaint = str(getattr(exc, "message", "") or "").split("\n", 1)[0].lower()
        for words, detail in _FRAMING_PROBLEMS:
            if all(word in complaint for word in words):
                return detail
    return _PARSE_ERRORS.get(status, "the request could not be parsed")


class _JsonErrorHandler(RequestHandler):
    """aiohttp answers unparseable requests itself, in text; ours answers them in JSON like the rest."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        if isinstance(exc, LineTooLong) and status == 400:
            request_line = re.match(rb"^[A-Z]+ ", exc.args[0] if isinstance(exc.args[0], bytes) else b"")
            status = 414 if request_line else 431
        if status >= 500:
            self.logger.error("error handling request", exc_info=exc)
            body = {"error": "internal proxy error"}
        else:
            # The parser's own message may quote the request (tokens in a URL or a header): never echo it.
            body = {"error": "malformed request", "detail": _parse_error_detail(status, exc)}
        return json_response(status, body, close=True)


class Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)
