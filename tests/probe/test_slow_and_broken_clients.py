"""Clients that are slow, stall, vanish, or do not speak HTTP: each gets a definite answer (or is logged) and nothing
is left open. Raw sockets, so the test controls every byte and every pause."""
from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from tests.probe.conftest import BODY_READ_TIMEOUT
from tests.service_servers import Server
from tests.support import ARTIFACTS, fixture_path

BOUNDARY = "probe-boundary-4d1c"


def _connect(server: Server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    return sock


def _multipart(filename: str, content: bytes) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode()


def _head(path: str, length: int, request_id: str = "") -> bytes:
    extra = f"X-Request-ID: {request_id}\r\n" if request_id else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: probe\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, closed): reads until the server closes, or the body is complete and it stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    sock.settimeout(5)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return status, headers, body, closed


@pytest.mark.parametrize("route", ["/v1/audio/transcriptions", "/transcribe"])
def test_stalled_upload_is_answered_408_and_closed(faster: Server, whisperx: Server, route: str) -> None:
    """1 KiB/s for three seconds (each pause under the timeout), then silence: 408 JSON and a closed connection."""
    server = whisperx if route == "/transcribe" else faster
    body = _multipart("slow.flac", fixture_path("jfk.flac").read_bytes())
    with _connect(server) as sock:
        sock.sendall(_head(route, len(body)))
        for offset in range(0, 3 * 1024, 1024):
            sock.sendall(body[offset : offset + 1024])
            time.sleep(1)
        silent_since = time.monotonic()
        status, headers, payload, closed = _read_response(sock)
    waited = time.monotonic() - silent_since
    assert status == 408, payload
    error = json.loads(payload)["error"]
    assert error["code"] == "upload_timeout" and "BODY_READ_TIMEOUT_SECONDS" in error["message"]
    assert headers["connection"] == "close" and closed
    assert waited >= BODY_READ_TIMEOUT - 1.5, "closed before the body had been silent for the timeout"


def test_slow_upload_that_keeps_sending_is_served(faster: Server) -> None:
    """Five seconds of upload in pieces, never silent for the 3 s timeout: transcribed as usual."""
    body = _multipart("hotwords.mp3", fixture_path("hotwords.mp3").read_bytes())
    pieces = 5
    size = -(-len(body) // pieces)
    with _connect(faster) as sock:
        sock.sendall(_head("/v1/audio/transcriptions", len(body)))
        for index in range(pieces):
            sock.sendall(body[index * size : (index + 1) * size])
            time.sleep(1)
        status, _, payload, _ = _read_response(sock)
    assert status == 200, payload
    assert "comfy" in json.loads(payload)["text"].lower()


def test_client_gone_mid_upload_is_logged_499(faster: Server) -> None:
    request_id = f"probe-{uuid.uuid4().hex}"
    body = _multipart("gone.flac", fixture_path("jfk.flac").read_bytes())
    with _connect(faster) as sock:
        sock.sendall(_head("/v1/audio/transcriptions", len(body), request_id) + body[:20_000])
        time.sleep(0.5)
    log = ARTIFACTS / "probe-whisper_faster.log"
    deadline = time.monotonic() + 30
    access: dict | None = None
    while access is None and time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if request_id in line and '"whisper_common.access"' in line:
                access = json.loads(line)
        time.sleep(0.2)
    assert access is not None, f"no access line for {request_id} in {log}"
    assert access["status"] == 499, access


MALFORMED = {
    "Content-Length: abc": (b"Content-Length: abc\r\n", "Content-Length"),
    "Content-Length: -1": (b"Content-Length: -1\r\n", "Content-Length"),
    "Content-Length with Transfer-Encoding": (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding"),
    "two Content-Lengths": (b"Content-Length: 5\r\nContent-Length: 6\r\n", "Content-Length"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_http_gets_the_json_error_shape(service: Server, case: str) -> None:
    headers, named = MALFORMED[case]
    with _connect(service) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: probe\r\n" + headers + b"\r\n0\r\n\r\nhello")
        status, response_headers, payload, closed = _read_response(sock)
    assert status == 400 and response_headers["content-type"] == "application/json", payload
    error = json.loads(payload)["error"]
    assert error["code"] == "invalid_http" and named in error["message"], error
    assert error["type"] == "invalid_request_error" and closed
