"""The full path: every request the fast path (fastpath.py) does not relay itself, through aiohttp's server and
client. That is a request to a service that is not ready (it wakes the service and waits, or gets the 503/504
that says why not), a request with a body (uploads), a WebSocket, HEAD, HTTP/1.0, a repeated Host or similar, a
pipelined request, an unknown host, the proxy's own status pages, and a request that cannot be parsed (a JSON
4xx). Every connection starts on the fast path, which hands such a request over with the bytes read so far.

Bodies stream chunk by chunk in both directions, never held whole; one shared ClientSession keeps a keep-alive
pool to every upstream. What is forwarded and what the proxy answers when a service fails it is forwarding.py's,
the same as on the fast path; the domain errors of a wake (errors.py) are turned into HTTP responses here and
nowhere else. Nothing is formatted or logged for a request that goes well unless the access log is on.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict
from yarl import URL

from .admin import admin, from_this_host, is_admin_path
from .errors import ServiceFailed, StartFailed, StartTimeout, TooManyWaiting
from .forwarding import (
    CONNECTION_REFUSED,
    CONNECTION_RESET,
    HOP_BY_HOP,
    Answer,
    RequestHeaders,
    not_answered,
    request_id,
    unreachable,
)
from .lifecycle import ServiceLifecycle
from .pages import REFRESH_SECONDS, starting_page
from .routes import STATUS_PREFIX, Route, RouteTable, parse_host
from .status import Metrics, status_document

log = logging.getLogger("autostart.proxy")

WEBSOCKET_MAX_MESSAGE_BYTES = 32 * 2**20
"""aiohttp gathers a whole WebSocket message before relaying it: bounded, so one client cannot exhaust the memory of
the proxy in front of every service (above the services' own 24 MiB limit, so they answer the too-large ones)."""
WEBSOCKET_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
# aiohttp's client would add these when the client did not send them; a proxy must not.
SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
STREAM_CHUNK = 256 * 1024
SMALL_BODY = 64 * 1024


def respond(answer: Answer) -> web.Response:
    """One of the proxy's own answers (forwarding.Answer) as aiohttp's response."""
    response = web.Response(status=answer.status, body=answer.payload(), headers=answer.headers())
    if answer.close:
        response.force_close()
    return response


class Proxy:
    """The full path's request handler: aiohttp's low-level server (app.py) calls `handle` for each request."""

    def __init__(self, table: RouteTable, lifecycles: Mapping[str, ServiceLifecycle], metrics: Metrics,
                 identity: Callable[[], Mapping[str, object]] = dict) -> None:
        self.table = table
        self.lifecycles = lifecycles
        self.metrics = metrics
        self.identity = identity  # what /_autostart/health tells about this process (make up compares it)
        self.session: aiohttp.ClientSession | None = None
        self.draining = False  # shutting down: every answer closes its connection (App.stop)
        self.handling = 0  # requests this path is answering now (a WebSocket session counts for as long as it lasts)

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
        """aiohttp's handler: the request's answer, with `Connection: close` once the proxy drains (App.stop)."""
        self.handling += 1
        try:
            response = await self._handle(request)
        finally:
            self.handling -= 1
        if self.draining and not response.prepared:
            response.force_close()
        return response

    def idle_connections(self, open_connections: int) -> bool:
        """Whether some of the full path's `open_connections` have no request under way: kept alive between two
        requests, their client may be sending the next one now (App.stop waits for it, or for the client to close)."""
        return open_connections > self.handling

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = RequestHeaders()  # read by the same rules as on the fast path
        for name, value in request.raw_headers:
            headers.add(name, value)
        given_host = headers.inspected.get(b"host")
        host = parse_host(given_host.decode("latin-1")) if given_host is not None else None
        if host is None:
            return respond(Answer(400, {"error": "missing or malformed Host header"}, close=True))
        route = self.table.by_host.get(host)
        if route is None:
            if request.raw_path.startswith(STATUS_PREFIX) and self._may_see_status(request, host):
                if is_admin_path(request.path):
                    return await self._admin(request, headers)
                return self._status(request)
            return respond(Answer(404, {"error": "unknown host", "host": host}))
        if not request.raw_path.startswith("/"):
            return self._count(route, respond(Answer(400, {"error": "request target must be a path",
                                                           "service": route.service.name})))

        rid = request_id(headers.inspected.get(b"x-request-id"))
        lifecycle = route.lifecycle
        touch = not route.ignores(headers.inspected.get(b"user-agent"))
        for attempt in (1, 2):
            if not lifecycle.try_acquire(touch=touch):
                refusal = await self._admit(request, route, touch, rid)
                if refusal is not None:
                    return self._count(route, refusal)
            try:
                response = await self._forward(request, route, headers, rid, may_retry=attempt == 1 and touch)
            except _ServiceGone:
                continue  # it was stopped from outside: admit again, which wakes it
            finally:
                lifecycle.release(touch=touch)
            return self._count(route, response, request, rid)
        raise AssertionError("unreachable: the second attempt never raises _ServiceGone")

    async def _admit(self, request: web.BaseRequest, route: Route, touch: bool,
                     rid: bytes) -> web.StreamResponse | None:
        """Wait for (or kick off) the wake; return a response when the request cannot go through now."""
        name = route.service.name
        if not touch:
            return respond(Answer(503, {"error": "service is asleep; this User-Agent does not wake it",
                                        "service": name}, retry_after=route.retry_after))
        if not route.service.blocking:
            route.lifecycle.wake()
            return self._starting(request, route)
        try:
            await route.lifecycle.acquire()
        except StartTimeout as exc:
            return respond(Answer(
                504,
                {"error": f"{name} did not become ready within {exc.timeout:g}s", "service": name,
                 "waited": round(exc.waited, 3), "state": route.lifecycle.state.value},
                retry_after=route.retry_after,
            ))
        except TooManyWaiting as exc:
            return respond(Answer(503, {"error": exc.message, "service": name}, retry_after=route.retry_after))
        except ServiceFailed as exc:
            # The service said why it cannot start (e.g. its model cannot be loaded): a 503 with that reason, and
            # Retry-After for when the proxy will try again.
            log.warning("request refused: the service cannot start",
                        extra={"service": name, "requestId": rid.decode(), "reason": exc.message})
            retry = math.ceil(route.lifecycle.backoff_left()) or int(route.retry_after or 1)
            return respond(Answer(503, {"error": f"{name} cannot start: {exc.message}", "service": name,
                                        "state": route.lifecycle.state.value, "retryAfterSeconds": retry},
                                  retry_after=str(retry)))
        except StartFailed as exc:
            log.warning("request refused: start failed",
                        extra={"service": name, "requestId": rid.decode(), "reason": exc.message})
            return respond(Answer(502, {"error": f"could not start {name}: {exc.message}", "service": name},
                                  retry_after=route.retry_after))
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
        return respond(Answer(503, body, retry_after=route.retry_after))

    def _count(self, route: Route, response: web.StreamResponse, request: web.BaseRequest | None = None,
               rid: bytes = b"") -> web.StreamResponse:
        self.metrics.count_request(route.service.name, response.status)
        if self.table.access_log and request is not None:
            log.info("request", extra={
                "service": route.service.name, "requestId": rid.decode(), "method": request.method,
                "path": request.path, "status": response.status, "userAgent": request.headers.get("User-Agent"),
            })
        return response

    # -- forwarding ----------------------------------------------------------------------------------

    async def _forward(self, request: web.BaseRequest, route: Route, incoming: RequestHeaders, rid: bytes,
                       may_retry: bool) -> web.StreamResponse:
        assert self.session is not None, "Proxy.open() not called"
        peer = request.transport.get_extra_info("peername") if request.transport else None
        # Decoded as aiohttp decodes headers itself (names are ASCII tokens); its client encodes them back alike.
        headers = CIMultiDict([
            (name.decode(), value.decode("utf-8", "surrogateescape"))
            for name, value in incoming.forwarded((peer[0] if peer else "unknown").encode(), rid)
        ])
        url = URL(route.base_url + request.raw_path, encoded=True)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, route, url, headers, rid)
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        response: web.StreamResponse | None = None
        try:
            async with self.session.request(
                request.method, url, headers=headers, data=request.content if request.body_exists else None,
                allow_redirects=False, timeout=route.timeout, compress=False,
            ) as upstream:
                response_headers = CIMultiDict(
                    [(name, value) for name, value in upstream.headers.items() if name.lower() not in HOP_BY_HOP]
                )
                length = upstream.content_length
                if length is not None and length <= SMALL_BODY and request.method != "HEAD":
                    # Small and complete: one write of head and body instead of a streamed exchange.
                    body = await upstream.read()
                    response_headers.popall("Content-Length", None)
                    return web.Response(status=upstream.status, reason=upstream.reason, headers=response_headers,
                                        body=body)
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=response_headers)
                if self.draining:
                    response.force_close()
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientConnectorError as exc:
            # Refused before a byte of the body was read, so the request can go again once the service is up.
            if may_retry and not await route.lifecycle.verify_running():
                raise _ServiceGone from exc
            return self._upstream_failed(request, route, rid, response, CONNECTION_REFUSED, exc)
        except asyncio.TimeoutError as exc:
            log.warning("upstream timed out", extra={"service": route.service.name, "requestId": rid.decode(),
                                                       "timeout": route.service.request_timeout})
            if response is not None:
                raise _abort(request) from exc
            return respond(not_answered(route.service.name, route.service.request_timeout))
        except (aiohttp.ClientError, ConnectionResetError) as exc:
            return self._upstream_failed(request, route, rid, response, CONNECTION_RESET, exc)

    def _upstream_failed(self, request: web.BaseRequest, route: Route, rid: bytes,
                         response: web.StreamResponse | None, what: str, exc: BaseException) -> web.StreamResponse:
        name = route.service.name
        log.warning("upstream failed", extra={"service": name, "requestId": rid.decode(), "reason": what,
                                                "detail": f"{type(exc).__name__}: {exc}"})
        route.lifecycle.upstream_failed()
        if response is not None and response.prepared:
            raise _abort(request) from exc
        return respond(unreachable(name, what))

    async def _websocket(self, request: web.BaseRequest, route: Route, url: URL, headers: CIMultiDict[str],
                         rid: bytes) -> web.StreamResponse:
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
            return respond(Answer(exc.status if 400 <= exc.status < 600 else 502,
                                  {"error": f"{route.service.name} refused the WebSocket upgrade",
                                   "service": route.service.name}))
        except (aiohttp.ClientError, OSError) as exc:
            return self._upstream_failed(request, route, rid, None, CONNECTION_REFUSED, exc)
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (),
                                       autoping=True, max_msg_size=WEBSOCKET_MAX_MESSAGE_BYTES)
        route.lifecycle.streams += 1  # open for as long as the session lasts: a hold does not wait for it
        try:
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
        finally:
            route.lifecycle.streams -= 1
        return client

    # -- status ----------------------------------------------------------------------------------------

    def _may_see_status(self, request: web.BaseRequest, host: str) -> bool:
        if host in self.table.status_hosts:
            return True
        peer = request.transport.get_extra_info("peername") if request.transport else None
        try:
            return bool(peer) and ipaddress.ip_address(peer[0]).is_loopback
        except ValueError:
            return False

    def _status(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return respond(Answer(405, {"error": "method not allowed"}))
        if request.path == "/_autostart/status":
            return respond(Answer(200, status_document(self.lifecycles)))
        if request.path == "/_autostart/metrics":
            return web.Response(body=self.metrics.exposition(),
                                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
        if request.path == "/_autostart/health":
            return respond(Answer(200, {"status": "ok", **self.identity()}))
        return respond(Answer(404, {"error": "not found", "path": request.path}))

    async def _admin(self, request: web.BaseRequest, headers: RequestHeaders) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not from_this_host(peer[0] if peer else None, b"x-forwarded-for" in headers.inspected):
            return respond(Answer(403, {"error": "admin calls are answered only to clients on this host"}))
        return respond(await admin(request.method, request.path, request.query, self.lifecycles))


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
        return respond(Answer(status, body, close=True))


class Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)
