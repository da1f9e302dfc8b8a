"""Requests that are not valid HTTP get OpenAI's error JSON from the protocol layer, with both of uvicorn's HTTP
implementations (httptools, which run_service uses when installed, and h11). A real uvicorn on a free port."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from tests.support import free_port
from whisper_common.http_protocol import JsonErrorH11Protocol, json_error_http_protocol


async def _app(scope: dict, receive: object, send: object) -> None:
    raise AssertionError("a malformed request reached the app")  # the client then sees a 500, and the test fails


@contextmanager
def serving(implementation: str) -> Iterator[int]:
    protocol = json_error_http_protocol() if implementation == "httptools" else JsonErrorH11Protocol
    assert protocol.__name__ == ("JsonErrorHttpToolsProtocol" if implementation == "httptools" else "JsonErrorH11Protocol")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app, host="127.0.0.1", port=port, http=protocol, log_level="error", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


LENGTH_ABC = b"Content-Length: abc\r\n"
LENGTH_NEGATIVE = b"Content-Length: -1\r\n"
LENGTH_AND_CHUNKED = b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"


@pytest.mark.parametrize(
    ("implementation", "headers"),
    [
        ("httptools", LENGTH_ABC),
        ("httptools", LENGTH_NEGATIVE),
        ("httptools", LENGTH_AND_CHUNKED),
        ("h11", LENGTH_ABC),
        ("h11", LENGTH_NEGATIVE),
        # h11 lets Transfer-Encoding override Content-Length (RFC 9112 6.3); httptools, which we run, refuses it.
    ],
    ids=["httptools-length abc", "httptools-length -1", "httptools-length with chunked", "h11-length abc", "h11-length -1"],
)
def test_malformed_request_is_a_json_400_and_the_connection_closes(implementation: str, headers: bytes) -> None:
    with serving(implementation) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), data
    assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_http" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("invalid HTTP request")
