"""Forwarding through the proxy to a real uvicorn backend started by the `command` provider."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.support import free_port

from .conftest import ProxyHandle, command_service, rss_kib, run_proxy, wait_until

pytestmark = pytest.mark.timeout(180)

HOST = "backend.test"
ASLEEP = "asleep.test"
WEDGED = "wedged.test"
BROKEN = "broken.test"

# Answers its health check once, then stops accepting connections while its process stays alive: a hung service.
WEDGED_SCRIPT = """
import socket, sys, time
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1]))); server.listen()
connection, _ = server.accept(); connection.recv(4096)
server.close()  # before the answer: once the proxy has it, nothing listens (a connection then is refused, not reset)
connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok"); connection.close()
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Iterator[ProxyHandle]:
    backend_port, asleep_port, wedged_port, broken_port = (free_port() for _ in range(4))
    config = {
        "services": {
            HOST: command_service(backend_port, idleTimeout=0),
            ASLEEP: command_service(asleep_port, name="asleep", ignoreUserAgents=["^UptimeRobot/"]),
            WEDGED: {"name": "wedged", "provider": "command", "proxyPort": wedged_port,
                     "startCommand": [sys.executable, "-c", WEDGED_SCRIPT, str(wedged_port)], "stopTimeout": 1},
            BROKEN: {"name": "broken", "provider": "command", "proxyPort": broken_port,
                     "startCommand": [sys.executable, "-c", "import sys; sys.exit(7)"]},
        },
        "checkInterval": 0.5,
    }
    with run_proxy(config, tmp_path_factory.mktemp("proxy")) as handle:
        assert handle.get(HOST, "/health", timeout=60).status_code == 200
        yield handle


@pytest.mark.parametrize(("method", "body"), [("GET", None), ("POST", b"hello")], ids=["fast-path", "full-path"])
def test_forwards_method_path_query_and_sets_forwarded_headers(proxy, method, body):
    response = httpx.request(
        method, f"{proxy.base}/echo?a=1&b=%20x", content=body,
        headers={"Host": f"{HOST}:8443", "X-Forwarded-For": "203.0.113.9", "X-Request-ID": "req-123",
                 "Connection": "keep-alive, X-Hop", "X-Hop": "secret", "Keep-Alive": "timeout=5",
                 "Proxy-Authorization": "Basic c2VjcmV0", "TE": "trailers"},
    )
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["method"] == method and echoed["query"] == "a=1&b=%20x"
    assert echoed["bodyBytes"] == len(body or b"")
    headers = echoed["headers"]
    assert headers["host"] == f"{HOST}:8443"
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http" and headers["x-forwarded-host"] == f"{HOST}:8443"
    assert headers["x-request-id"] == "req-123"
    generated = proxy.get(HOST, "/echo").json()["headers"]["x-request-id"]
    assert len(generated) == 16 and generated != proxy.get(HOST, "/echo").json()["headers"]["x-request-id"]
    for hop in ("x-hop", "keep-alive", "proxy-authorization", "te"):
        assert hop not in headers
    # aiohttp's client defaults must not leak in either.
    assert "user-agent" in headers and headers["user-agent"].startswith("python-httpx")


def test_host_matching_ignores_case_and_port(proxy):
    assert proxy.get(HOST.upper() + ":80", "/health").status_code == 200


def test_chunked_request_body_streams_through(proxy):
    def chunks():
        for _ in range(64):
            yield b"z" * 10_000

    response = httpx.post(f"{proxy.base}/upload", content=chunks(), headers={"Host": HOST}, timeout=30)
    assert response.status_code == 200 and response.json()["bodyBytes"] == 640_000


def test_large_streamed_upload_keeps_proxy_memory_flat(proxy):
    size = 200 * 1024 * 1024
    block = os.urandom(1024 * 1024)

    def body():
        for _ in range(size // len(block)):
            yield block

    before = rss_kib(proxy.pid)
    response = httpx.post(f"{proxy.base}/upload", content=body(),
                          headers={"Host": HOST, "Content-Length": str(size)}, timeout=120)
    after = rss_kib(proxy.pid)
    assert response.status_code == 200 and response.json()["bodyBytes"] == size
    growth_mib = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(f"proxy RSS before {before['VmRSS'] / 1024:.1f} MiB, peak after 200 MiB upload "
          f"{after['VmHWM'] / 1024:.1f} MiB (+{growth_mib:.1f} MiB)")
    assert growth_mib < 16, f"proxy memory grew by {growth_mib:.1f} MiB during a 200 MiB upload"


def test_large_response_streams_back(proxy):
    size = 50 * 1024 * 1024
    received = 0
    with httpx.stream("GET", f"{proxy.base}/big?bytes={size}", headers={"Host": HOST}, timeout=60) as response:
        for chunk in response.iter_bytes():
            received += len(chunk)
    assert received == size


def test_server_sent_events_arrive_as_they_are_sent(proxy):
    arrivals: list[float] = []
    with httpx.stream("GET", f"{proxy.base}/sse?count=4&interval=0.5", headers={"Host": HOST}, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert all(gap > 0.3 for gap in gaps), f"events arrived bunched together: gaps {gaps}"


async def test_websocket_upgrade_is_passed_through(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{proxy.base}/ws", headers={"Host": HOST}, protocols=["chat"]) as ws:
            assert ws.protocol == "chat"
            await ws.send_str("hello")
            assert (await ws.receive_str(timeout=5)) == "echo: hello"
            await ws.send_bytes(b"\x00\x01binary")
            assert (await ws.receive_bytes(timeout=5)) == b"\x00\x01binary"
            await ws.send_str("close")
            closing = await ws.receive(timeout=5)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 4001


def test_backend_dying_mid_request_is_a_502(proxy):
    # POST: aiohttp retries an idempotent request once on a fresh connection, which would hide the reset.
    response = httpx.post(f"{proxy.base}/close", headers={"Host": HOST}, timeout=30)
    assert response.status_code == 502
    assert response.json() == {"error": "backend is unreachable: connection reset by the service",
                               "service": "backend"}
    # The command provider notices the exit; the next request starts it again.
    assert proxy.get(HOST, "/health", timeout=60).status_code == 200


def test_refused_connection_to_a_running_service_is_a_502(proxy):
    response = proxy.get(WEDGED, "/anything")
    assert response.status_code == 502
    assert response.json() == {"error": "wedged is unreachable: connection refused", "service": "wedged"}


def test_a_start_command_that_exits_is_a_502_naming_its_exit_code(proxy):
    response = proxy.get(BROKEN, "/?api_key=sk-query-secret",
                         headers={"X-Request-ID": "req-broken-1", "Authorization": "Bearer sk-header-secret"})
    assert response.status_code == 502
    body = response.json()
    assert body["service"] == "broken"
    assert "startCommand exited with code 7 before it became healthy" in body["error"]
    # The log says which request failed and why, as JSON, and nothing secret.
    lines = [json.loads(line) for line in proxy.log().splitlines() if line.startswith("{")]
    refused = [line for line in lines if line.get("requestId") == "req-broken-1"]
    assert refused and refused[0]["service"] == "broken" and "exited with code 7" in refused[0]["reason"]
    assert "sk-header-secret" not in proxy.log() and "sk-query-secret" not in proxy.log()


def test_ignored_user_agents_neither_wake_nor_count(proxy):
    response = proxy.get(ASLEEP, "/health", headers={"User-Agent": "UptimeRobot/2.0 (+http://www.uptimerobot.com/)"})
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert response.json()["service"] == "asleep"
    time.sleep(1)
    assert proxy.status()[ASLEEP]["state"] == "stopped" and proxy.status()[ASLEEP]["wakes"] == 0
    # Awake (woken by a real client), the monitor is answered but does not count as activity.
    assert proxy.get(ASLEEP, "/health", timeout=60).status_code == 200
    time.sleep(1.5)
    monitored = proxy.get(ASLEEP, "/health", headers={"User-Agent": "UptimeRobot/2.0"})
    assert monitored.status_code == 200
    assert proxy.status()[ASLEEP]["lastRequestSecondsAgo"] >= 1.4


def test_unknown_host_is_404_json(proxy):
    response = proxy.get("nobody.test", "/")
    assert response.status_code == 404
    assert response.json() == {"error": "unknown host", "host": "nobody.test"}


def test_status_and_metrics_answer_on_the_proxys_own_name_only(proxy):
    status = httpx.get(f"{proxy.base}/_autostart/status", timeout=5)
    assert status.status_code == 200
    entry = status.json()["services"][HOST]
    assert {"state", "inFlight", "lastWakeSeconds", "lastRequestAt", "lastError"} <= set(entry)
    metrics = httpx.get(f"{proxy.base}/_autostart/metrics", timeout=5).text
    for family in ("autostart_wakes_total", "autostart_wake_seconds_bucket", "autostart_requests_total",
                   "autostart_in_flight", "autostart_stops_total"):
        assert family in metrics
    assert 'autostart_requests_total{service="backend",status="200"}' in metrics
    # On a service's host name the path is neither answered by the proxy nor forwarded.
    hidden = proxy.get(HOST, "/_autostart/status")
    assert hidden.status_code == 404 and "services" not in hidden.text


async def test_client_going_away_cancels_the_upstream_request(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"GET /slow?seconds=20 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.5)
    assert proxy.status()[HOST]["inFlight"] == 1
    writer.close()
    started = time.monotonic()
    while proxy.status()[HOST]["inFlight"] != 0:
        assert time.monotonic() - started < 5, "the proxied request outlived its client"
        await asyncio.sleep(0.1)


def raw_exchange(port: int, payload: bytes) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


@pytest.mark.parametrize(
    ("payload", "statuses"),
    [
        (b"HELLO THERE\r\n\r\n", {400}),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, {400}),
        (b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", {400, 431}),
        (b"GET / HTTP/1.1\r\nHost: bad host name\r\n\r\n", {400}),
        (b"GET / HTTP/1.1\r\n\r\n", {400}),
        (b"GET http://" + HOST.encode() + b"/health HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n", {400}),
    ],
    ids=["garbage", "tls-handshake", "oversized-header", "bad-host", "no-host", "absolute-form"],
)
def test_malformed_requests_get_4xx_json_and_the_proxy_keeps_serving(proxy, payload, statuses):
    status, body = raw_exchange(proxy.port, payload)
    assert status in statuses
    assert "error" in body
    assert proxy.get(HOST, "/health").status_code == 200


def test_idle_command_service_is_stopped_with_its_process_group(tmp_path):
    port = free_port()
    config = {"services": {HOST: command_service(port, idleTimeout=1)}, "checkInterval": 0.3}
    with run_proxy(config, tmp_path) as proxy:
        pid = proxy.get(HOST, "/echo").json()["pid"]
        os.kill(pid, 0)
        wait_until(lambda: proxy.status()[HOST]["state"] == "stopped", 15, "the idle stop")
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        again = proxy.get(HOST, "/echo").json()["pid"]
        assert again != pid


def test_backend_killed_from_outside_is_started_again(tmp_path):
    port = free_port()
    config = {"services": {HOST: command_service(port, idleTimeout=0)}, "checkInterval": 30}
    with run_proxy(config, tmp_path) as proxy:
        pid = proxy.get(HOST, "/echo").json()["pid"]
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        # Before any periodic check: the refused connection makes the proxy look, find it gone, restart it.
        response = proxy.get(HOST, "/echo", timeout=60)
        assert response.status_code == 200 and response.json()["pid"] != pid
        assert proxy.status()[HOST]["wakes"] == 2


def test_sigterm_lets_the_request_in_flight_finish_then_stops_the_child(tmp_path):
    port = free_port()
    config = {"services": {HOST: command_service(port, idleTimeout=0)}}
    with run_proxy(config, tmp_path) as proxy:
        pid = proxy.get(HOST, "/echo").json()["pid"]
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(proxy.get, HOST, "/slow?seconds=2")
            time.sleep(0.5)
            os.kill(proxy.pid, signal.SIGTERM)
            response = slow.result(timeout=30)
        assert response.status_code == 200 and response.json()["slept"] == 2
        wait_until(lambda: not _alive(proxy.pid), 20, "the proxy to exit")
        wait_until(lambda: not _alive(pid), 10, "the backend it started to stop")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by the test's Popen) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_pipelined_requests_get_the_first_answer_then_a_clean_close(proxy):
    request = f"GET /echo HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(request + request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    assert received.count(b"HTTP/1.1 ") in (1, 2)  # the second is either answered or left for a retry
    wait_until(lambda: proxy.status()[HOST]["inFlight"] == 0, 5, "nothing left in flight")


_POST = b"POST /upload HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (_POST + b"Content-Length: abc\r\n\r\nhello", "Content-Length must be a non-negative whole number"),
        (_POST + b"Content-Length: -1\r\n\r\nhello", "Content-Length must be a non-negative whole number"),
        (b"GET /health HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nContent-Length: abc\r\n\r\n",
         "Content-Length must be a non-negative whole number"),
        (_POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
         "Content-Length and Transfer-Encoding must not be sent together"),
        (_POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "Content-Length is sent more than once"),
        (_POST + b"Transfer-Encoding: gzip\r\n\r\nhello", "Transfer-Encoding must be chunked (and only once)"),
        (_POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "the chunked body is malformed"),
    ],
    ids=["cl-abc", "cl-negative", "get-cl-abc", "cl-with-te", "cl-twice", "te-gzip", "bad-chunk-size"],
)
def test_malformed_framing_gets_a_json_400_naming_the_problem(proxy, payload, detail):
    status, body = raw_exchange(proxy.port, payload)
    assert status == 400
    assert body == {"error": "malformed request", "detail": detail}
    assert proxy.get(HOST, "/health").status_code == 200


def test_keep_alive_connection_serves_many_then_bad_bytes_get_a_json_400(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200")
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < _length(head):
                body += sock.recv(65536)
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request") and b'"malformed request"' in answer


def test_head_and_http_1_0_requests_are_answered(proxy):
    head = httpx.head(f"{proxy.base}/health", headers={"Host": HOST})
    assert head.status_code == 200 and head.content == b""
    status, body = raw_exchange(proxy.port, f"GET /health HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
    assert status == 200 and body["status"] == "ok"


@pytest.mark.parametrize("method", ["GET", "POST"], ids=["fast-path", "full-path"])
def test_a_request_past_request_timeout_gets_504(tmp_path, method):
    port = free_port()
    config = {"services": {HOST: command_service(port, idleTimeout=0, requestTimeout=1)}, "checkInterval": 0.3}
    with run_proxy(config, tmp_path) as proxy:
        assert proxy.get(HOST, "/health", timeout=60).status_code == 200
        started = time.monotonic()
        response = httpx.request(method, f"{proxy.base}/slow?seconds=10", headers={"Host": HOST}, timeout=30)
        assert response.status_code == 504 and time.monotonic() - started < 5
        assert response.json() == {"error": "backend did not answer within 1s", "service": "backend"}
        wait_until(lambda: proxy.status()[HOST]["inFlight"] == 0, 5, "nothing left in flight")


def test_a_keep_alive_upstream_left_paused_by_a_slow_client_serves_the_next_request(proxy):
    # A client slower than the service makes the proxy stop reading the service (flow control). When the answer's
    # last bytes came in the read that paused it, the connection went back to the pool paused, and the next request
    # sent on it was never answered. Repeated, because which read is the last one depends on timing.
    for _ in range(3):
        with httpx.stream("GET", f"{proxy.base}/big?bytes={8 * 1024 * 1024}", headers={"Host": HOST},
                          timeout=30) as response:
            received = 0
            for chunk in response.iter_raw(16384):
                received += len(chunk)
                time.sleep(0.0005)
        assert received == 8 * 1024 * 1024
        for _ in range(3):
            assert proxy.get(HOST, "/health", timeout=5).status_code == 200
