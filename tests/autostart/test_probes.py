"""The HTTP probes the proxy sends itself (readiness with progress, activity) against real sockets that answer in
the ways services do: with a length and the connection kept open, until the connection ends, or not in HTTP."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from autostart.activity import HttpActivity
from autostart.providers.readiness import fetch, http_health

pytestmark = pytest.mark.timeout(15)


@asynccontextmanager
async def answering(raw: bytes, *, close: bool) -> AsyncIterator[int]:
    """A server on a free loopback port that answers every request with `raw` (then closes, or keeps it open)."""
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()
        if close:
            writer.close()
        else:
            held.append(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def http(status: str, body: object, *, length: bool = True) -> bytes:
    payload = json.dumps(body).encode() if not isinstance(body, bytes) else body
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
    if length:
        head += f"Content-Length: {len(payload)}\r\n"
    return head.encode() + b"\r\n" + payload


async def test_an_answer_with_a_length_is_read_without_waiting_for_the_connection_to_end():
    async with answering(http("200 OK", {"status": "ready"}), close=False) as port:
        answer = await fetch("127.0.0.1", port, "/health/ready", timeout=60)  # a wait for EOF would hit the 15 s limit
    assert answer is not None and answer.status == 200 and json.loads(answer.body) == {"status": "ready"}


async def test_a_not_ready_answer_hands_back_its_progress():
    body = {"status": "not_ready", "error": {"code": "not_ready"}, "progress": {"cacheBytes": 1234}}
    async with answering(http("503 Service Unavailable", body, length=False), close=True) as port:
        health = await http_health("127.0.0.1", port, "/health/ready")
    assert not health.ready and health.progress == {"cacheBytes": 1234}


@pytest.mark.parametrize(
    ("body", "failed"),
    [
        ({"status": "failed", "error": {"message": "preload failed: model 'x' not found"}},
         "preload failed: model 'x' not found"),
        ({"status": "failed", "reason": "no GPU"}, "no GPU"),
        ({"status": "failed"}, "the service reported that it cannot start"),
        ({"status": "failed", "error": {"message": "x" * 5000}}, "x" * 500),
        ({"status": "not_ready", "error": {"message": "loading models"}}, None),
    ],
    ids=["error-message", "reason", "no-reason", "long-reason-cut", "not-ready-is-not-failed"],
)
async def test_a_failed_answer_hands_back_its_reason(body, failed):
    async with answering(http("503 Service Unavailable", body), close=True) as port:
        health = await http_health("127.0.0.1", port, "/health/ready")
    assert not health.ready and health.failed == failed


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 2OO OK\r\n\r\n"], ids=["not-http", "bad-status"])
async def test_what_is_not_http_is_no_answer(raw):
    async with answering(raw, close=True) as port:
        assert await fetch("127.0.0.1", port, "/health") is None
        assert not (await http_health("127.0.0.1", port, "/health")).ready


async def test_nothing_listening_is_no_answer():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    assert await fetch("127.0.0.1", port, "/health") is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (http("200 OK", {"busy": True, "counts": {"jobs_running": 1, "jobs_queued": 0, "realtime_sessions": 2}}),
         "busy: jobs_running=1, realtime_sessions=2"),
        (http("200 OK", {"busy": True}), "busy"),
        (http("200 OK", {"busy": False, "counts": {"jobs_running": 0}}), None),
        (http("200 OK", {"busy": "yes"}), None),
        (http("404 Not Found", {"detail": "Not Found"}), None),
        (http("200 OK", b"<html>busy</html>"), None),
    ],
    ids=["busy", "busy-without-counts", "idle", "not-a-boolean", "no-such-route", "not-json"],
)
async def test_the_activity_probe_says_busy_only_for_busy_true(raw, reason):
    async with answering(raw, close=True) as port:
        assert await HttpActivity("127.0.0.1", port, "/health/activity").busy() == reason
