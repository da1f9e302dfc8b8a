"""The forwarding policy, one copy for both paths (fastpath.py relays plain requests, proxy.py everything else).

What a service gets from a client's request: the end-to-end headers as received (hop-by-hop ones, those named in
`Connection`, `Expect` and the proxy's own dropped), `X-Forwarded-For` with the client's address appended,
`X-Forwarded-Proto` and `X-Forwarded-Host` unless a front (Nginx) set them, and `X-Request-ID`: the client's when it
is 1-128 printable ASCII characters, else a new one. What the client gets back: the service's end-to-end headers.
What the proxy answers itself when the service fails it: 502 / 504 in JSON, never cached.

Pure: bytes in, bytes out, no I/O, so both paths and the tests run the same rules.
"""
from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
     "trailer", "transfer-encoding", "upgrade"}
)
"""Headers about one connection, never passed on (RFC 9110 §7.6.1), in either direction; lower-case. Every other
response header of the service goes back to the client as it came (each path redoes the framing)."""
HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)

# Request headers the proxy reads: the routing and fast-path decision, and the ones it adds to or replaces.
_INSPECTED = frozenset({b"host", b"user-agent", b"connection", b"content-length", b"transfer-encoding", b"expect",
                        b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"})
# Request headers never passed on as received: hop-by-hop, Expect (the proxy answers it), and the ones it rewrites.
_NOT_FORWARDED = HOP_BY_HOP_BYTES | {b"expect", b"x-forwarded-for", b"x-request-id"}

REQUEST_ID_MAX = 128
_REQUEST_ID = re.compile(rb"[\x20-\x7e]{1,%d}" % REQUEST_ID_MAX)
_REQUEST_ID_PREFIX = os.urandom(4).hex().encode()
_request_numbers = itertools.count(1)


def request_id(given: bytes | None) -> bytes:
    """The X-Request-ID sent to the service (and logged): the client's when it is 1-128 printable ASCII characters
    (anything else could forge log lines or smuggle bytes into the service's logs), else a new one: 16 hex digits,
    this process's random prefix and a counter (unique here, and no system call per request)."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return b"%s%08x" % (_REQUEST_ID_PREFIX, next(_request_numbers) & 0xFFFFFFFF)


class RequestHeaders:
    """A client's request headers as the proxy reads them, fed one at a time in the order received (by the fast
    path's parser callback, or the full path's loop over aiohttp's raw headers): those passed on as they are, and
    the few the proxy decides on (`inspected`, lower-case name → first value; repeats set `repeated`)."""

    __slots__ = ("kept", "inspected", "repeated", "size")

    def __init__(self) -> None:
        self.kept: list[bytes] = []  # name, b": ", value, b"\r\n" for each header passed on: joined, a head
        self.inspected: dict[bytes, bytes] = {}
        self.repeated = False
        self.size = 0

    def clear(self) -> None:
        """Ready for the next request on the connection (new containers: the last request may keep its own)."""
        self.kept = []
        self.inspected = {}
        self.repeated = False
        self.size = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.size += len(name) + len(value) + 4
        lowered = name.lower()
        if lowered in _INSPECTED:
            inspected = self.inspected
            if lowered in inspected:
                self.repeated = True
                if lowered == b"x-forwarded-for":  # one list, however many lines it came in
                    inspected[lowered] += b", " + value
            else:
                inspected[lowered] = value
        if lowered not in _NOT_FORWARDED:
            self.kept += (name, b": ", value, b"\r\n")

    def lines(self, peer: bytes, request_id: bytes) -> list[bytes]:
        """The header lines the service gets, as pieces (name, b": ", value, b"\\r\\n" for each) that joined make
        the head after the request line; `peer` is the client's address. Once per request: it extends `kept`."""
        inspected = self.inspected
        lines = self.kept
        connection = inspected.get(b"connection")
        if connection is not None:
            listed = {token.strip().lower() for token in connection.split(b",")} - {b"close", b"keep-alive", b""}
            if listed:
                lines = [piece for i in range(0, len(lines), 4) if lines[i].lower() not in listed
                         for piece in lines[i:i + 4]]
        forwarded_for = inspected.get(b"x-forwarded-for")
        lines += (b"X-Forwarded-For", b": ", forwarded_for + b", " + peer if forwarded_for else peer, b"\r\n")
        if b"x-forwarded-proto" not in inspected:
            lines += (b"X-Forwarded-Proto", b": ", b"http", b"\r\n")  # the proxy listens on plain HTTP only
        if b"x-forwarded-host" not in inspected:
            lines += (b"X-Forwarded-Host", b": ", inspected.get(b"host", b""), b"\r\n")
        lines += (b"X-Request-ID", b": ", request_id, b"\r\n")
        return lines

    def forwarded(self, peer: bytes, request_id: bytes) -> list[tuple[bytes, bytes]]:
        """The same headers as (name, value) pairs, for an HTTP client that writes the head itself."""
        lines = self.lines(peer, request_id)
        return list(zip(lines[0::4], lines[2::4]))


# -- the proxy's own answers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """A response the proxy gives itself: a status, a JSON body, never cached, and Retry-After when a retry makes
    sense. `close`: the connection is closed after it (the request's state is not known to be clean)."""

    status: int
    body: Mapping[str, object]
    retry_after: str | None = None
    close: bool = False

    def headers(self) -> list[tuple[str, str]]:
        """Its headers besides the framing (Content-Length, Connection) and Date, which each server adds."""
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        if self.retry_after:
            headers.append(("Retry-After", self.retry_after))
        return headers

    def payload(self) -> bytes:
        return json.dumps(self.body).encode()

    def http11(self) -> bytes:
        """The whole response on the wire (the fast path has no framework to write it)."""
        body = self.payload()
        lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, HTTPStatus(self.status).phrase.encode())]
        lines += [b"%s: %s\r\n" % (name.encode(), value.encode()) for name, value in self.headers()]
        lines.append(b"Content-Length: %d\r\nDate: %s\r\n" % (len(body), formatdate(usegmt=True).encode()))
        if self.close:
            lines.append(b"Connection: close\r\n")
        return b"".join(lines) + b"\r\n" + body


def unreachable(service: str, what: str) -> Answer:
    """502: the service refused the connection or dropped it before its answer began (`what` says which)."""
    return Answer(502, {"error": f"{service} is unreachable: {what}", "service": service}, close=True)


def not_answered(service: str, timeout: float) -> Answer:
    """504: the service did not answer within requestTimeout."""
    return Answer(504, {"error": f"{service} did not answer within {timeout:g}s", "service": service}, close=True)


CONNECTION_REFUSED = "connection refused"
CONNECTION_RESET = "connection reset by the service"
