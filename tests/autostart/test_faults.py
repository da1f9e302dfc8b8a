"""The proxy when things go wrong, against real backend processes: starts that fail or never finish, a backend
killed during a request or between requests, many requests on one wake, clients that leave while it wakes.

Each case checks the exact status the client gets, that one wake started the service once, that nothing is left
running that should not be, and that /_autostart/status says what is really the case.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.support import free_port

from .conftest import (
    ProxyHandle,
    alive,
    backend_command,
    command_service,
    log_events,
    pids_in,
    run_proxy,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

HOST = "backend.test"


def _service(tmp_path: Path, port: int, **extra) -> tuple[dict, Path]:
    pid_file = tmp_path / f"pids-{port}"
    env = {"BACKEND_PID_FILE": str(pid_file), **extra.pop("env", {})}
    return {"services": {HOST: command_service(port, env=env, **extra)}, "checkInterval": 0.3}, pid_file


# -- starts that fail -----------------------------------------------------------------------------------


def test_a_service_that_never_becomes_healthy_gets_504_and_is_stopped_again(tmp_path):
    config, pid_file = _service(tmp_path, free_port(), startTimeout=2, env={"BACKEND_HEALTH": "never"})
    with run_proxy(config, tmp_path) as proxy:
        response = proxy.get(HOST, "/echo")
        assert response.status_code == 504
        body = response.json()
        assert body["service"] == "backend" and "did not become ready within 2s" in body["error"]
        [pid] = pids_in(pid_file)
        wait_until(lambda: not alive(pid), 15, "the never-healthy backend to be stopped")
        status = proxy.status()[HOST]
        assert status["state"] == "stopped" and status["wakes"] == 1 and status["inFlight"] == 0
        assert "not ready within 2s" in status["lastError"]
        assert 'autostart_stops_total{reason="failed start",service="backend"} 1.0' in proxy.metrics()


def test_a_service_that_says_it_cannot_start_is_answered_503_at_once_then_backed_off(tmp_path):
    # Its model cannot be loaded: /health answers `"status": "failed"` with the reason. Callers must hear that
    # reason within seconds (not after startTimeout), the process must be stopped, and requests during the back-off
    # must not start it again; after the back-off the next request tries once more.
    config, pid_file = _service(tmp_path, free_port(), startTimeout=60, failedStartBackoff=3,
                                env={"BACKEND_HEALTH": "failed"})
    with run_proxy(config, tmp_path) as proxy:
        started = time.monotonic()
        response = proxy.get(HOST, "/echo")
        assert time.monotonic() - started < 10, "the failure took as long as a start timeout"
        assert response.status_code == 503
        body = response.json()
        assert body["service"] == "backend"
        assert "cannot start" in body["error"] and "model 'large-v3' not found" in body["error"], body
        assert 1 <= int(response.headers["Retry-After"]) <= 3
        [pid] = pids_in(pid_file)
        wait_until(lambda: not alive(pid), 15, "the failed backend to be stopped")
        wait_until(lambda: proxy.status()[HOST]["state"] == "stopped", 5, "status to say stopped")

        during = proxy.get(HOST, "/echo")
        assert during.status_code == 503 and "model 'large-v3' not found" in during.json()["error"]
        assert int(during.headers["Retry-After"]) <= 3
        status = proxy.status()[HOST]
        assert status["wakes"] == 1 and status["failedStartsInARow"] == 1 and status["nextStartInSeconds"] > 0
        assert "model 'large-v3' not found" in status["lastError"]
        assert len(pids_in(pid_file)) == 1, "a request during the back-off started the service again"

        wait_until(lambda: proxy.status()[HOST]["nextStartInSeconds"] == 0, 10, "the back-off to pass")
        again = proxy.get(HOST, "/echo")
        assert again.status_code == 503
        assert len(pids_in(pid_file)) == 2 and proxy.status()[HOST]["wakes"] == 2
        # Two failures in a row: the back-off doubles.
        assert proxy.status()[HOST]["failedStartsInARow"] == 2 and int(again.headers["Retry-After"]) >= 4


def test_a_start_command_that_exits_leaves_nothing_of_its_process_group(tmp_path):
    straggler = tmp_path / "straggler.pid"
    port = free_port()
    service = {"name": "backend", "provider": "command", "proxyPort": port, "stopTimeout": 1,
               "startCommand": ["/bin/sh", "-c", f"sleep 300 & echo $! > {straggler}; exit 7"]}
    with run_proxy({"services": {HOST: service}, "checkInterval": 0.3}, tmp_path) as proxy:
        response = proxy.get(HOST, "/")
        assert response.status_code == 502
        assert "startCommand exited with code 7" in response.json()["error"]
        pid = int(straggler.read_text())
        wait_until(lambda: not alive(pid), 10, "the exited start's leftover child to be stopped")
        wait_until(lambda: proxy.status()[HOST]["state"] == "stopped", 5, "status to say stopped")
        assert proxy.status()[HOST]["wakes"] == 1


def test_a_slow_first_start_that_reports_progress_is_waited_for_not_restarted(tmp_path):
    # A first start that downloads a model: /health answers 503 with an advancing `progress` for 6 s.
    config, pid_file = _service(tmp_path, free_port(), startTimeout=2, progressTimeout=60,
                                env={"BACKEND_LOADING_SECONDS": "6"})
    with run_proxy(config, tmp_path) as proxy:
        early = proxy.get(HOST, "/echo")
        assert early.status_code == 504 and early.json()["state"] == "starting"
        status = proxy.status()[HOST]
        assert status["state"] == "starting" and status["startProgress"]["cacheBytes"] > 0
        wait_until(lambda: proxy.get(HOST, "/echo").status_code == 200, 30, "the slow start to finish")
        [pid] = pids_in(pid_file)  # one process, never stopped and started again
        assert proxy.get(HOST, "/echo").json()["pid"] == pid
        status = proxy.status()[HOST]
        assert status["state"] == "ready" and status["wakes"] == 1 and status["stops"] == 0


# -- the backend dies -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def killable(tmp_path_factory) -> Iterator[tuple[ProxyHandle, Path]]:
    tmp_path = tmp_path_factory.mktemp("killable")
    record = tmp_path / "handled"
    config, _ = _service(tmp_path, free_port(), idleTimeout=0, env={"BACKEND_RECORD": str(record)})
    config["checkInterval"] = 30  # the proxy learns of a death from the request, not from a periodic check
    with run_proxy(config, tmp_path) as proxy:
        yield proxy, record


def _handled(record: Path, tag: str) -> int:
    return record.read_text().split().count(tag) if record.exists() else 0


@pytest.mark.parametrize(
    ("method", "headers"),
    [("GET", {}), ("GET", {"Content-Length": "0"}), ("POST", {})],
    ids=["get-fast-path", "get-full-path", "post"],
)
def test_a_backend_killed_during_a_request_is_a_502_and_the_request_never_runs_again(killable, method, headers):
    proxy, record = killable
    pid = proxy.get(HOST, "/echo", timeout=60).json()["pid"]
    wakes = proxy.status()[HOST]["wakes"]
    tag = f"{method.lower()}-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            httpx.request, method, f"{proxy.base}/record?tag={tag}&seconds=60",
            headers={"Host": HOST, "X-Request-ID": tag, **headers}, content=b"payload" if method == "POST" else None,
            timeout=90,
        )
        wait_until(lambda: _handled(record, tag) == 1, 20, "the handler to run")
        os.kill(pid, signal.SIGKILL)
        response = pending.result(timeout=90)
    assert response.status_code == 502
    assert response.json() == {"error": "backend is unreachable: connection reset by the service",
                               "service": "backend"}
    assert _handled(record, tag) == 1
    # The status says so at once (the periodic check is 30 s away), and nothing was restarted to answer it again.
    wait_until(lambda: proxy.status()[HOST]["state"] == "stopped", 5, "status to say stopped")
    assert proxy.status()[HOST]["wakes"] == wakes
    failed = [e for e in log_events(proxy) if e.get("requestId") == tag and e.get("event") == "upstream failed"]
    assert failed and failed[0]["service"] == "backend"
    # The next request finds it gone, starts it once, and is served by the new process.
    again = proxy.get(HOST, "/echo", timeout=60)
    assert again.status_code == 200 and again.json()["pid"] != pid
    assert proxy.status()[HOST]["wakes"] == wakes + 1
    assert _handled(record, tag) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_backend_killed_between_requests_is_started_again_for_the_next(killable, method):
    proxy, _ = killable
    pid = proxy.get(HOST, "/echo", timeout=60).json()["pid"]
    wakes = proxy.status()[HOST]["wakes"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), 5, "the kill")
    # Refused before a byte was sent: the one case in which the proxy may send the request after a wake.
    response = httpx.request(method, f"{proxy.base}/echo", headers={"Host": HOST}, content=b"abc"
                             if method == "POST" else None, timeout=60)
    assert response.status_code == 200 and response.json()["pid"] != pid
    assert response.json()["bodyBytes"] == (3 if method == "POST" else 0)
    status = proxy.status()[HOST]
    assert status["wakes"] == wakes + 1 and status["state"] == "ready"


# -- many clients on one wake ---------------------------------------------------------------------------


def test_twenty_concurrent_requests_while_asleep_start_it_once(tmp_path):
    config, pid_file = _service(tmp_path, free_port(), env={"BACKEND_START_DELAY": "1"})
    with run_proxy(config, tmp_path) as proxy:
        with ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(lambda i: proxy.get(HOST, f"/echo?n={i}", timeout=60), range(20)))
        assert [r.status_code for r in responses] == [200] * 20
        [pid] = pids_in(pid_file)
        assert {r.json()["pid"] for r in responses} == {pid}
        status = proxy.status()[HOST]
        assert status["wakes"] == 1 and status["state"] == "ready"
        assert status["inFlight"] == 0 and status["waiting"] == 0


def test_clients_leaving_during_the_wake_neither_cancel_it_nor_start_it_twice(tmp_path):
    config, pid_file = _service(tmp_path, free_port(), env={"BACKEND_START_DELAY": "2"})
    with run_proxy(config, tmp_path) as proxy:
        leaving = []
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
            sock.sendall(f"GET /echo HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            leaving.append(sock)
        wait_until(lambda: proxy.status()[HOST]["waiting"] == 5, 10, "five requests waiting on the wake")
        assert proxy.status()[HOST]["state"] == "starting"
        for sock in leaving:
            sock.close()
        wait_until(lambda: proxy.status()[HOST]["waiting"] == 0, 10, "the leavers to stop waiting")
        # The start goes on without them, and whoever asks next is served by that one start.
        wait_until(lambda: proxy.status()[HOST]["state"] == "ready", 30, "the start to finish")
        response = proxy.get(HOST, "/echo")
        assert response.status_code == 200
        [pid] = pids_in(pid_file)
        assert response.json()["pid"] == pid
        status = proxy.status()[HOST]
        assert status["wakes"] == 1 and status["inFlight"] == 0 and status["waiting"] == 0


# -- work that is not a request keeps the service up ---------------------------------------------------------


def test_an_idle_service_busy_with_jobs_is_not_stopped_until_they_end(tmp_path):
    config, pid_file = _service(tmp_path, free_port(), idleTimeout=1)
    with run_proxy(config, tmp_path) as proxy:
        assert proxy.get(HOST, "/busy?jobs=2", timeout=60).json() == {"jobs_running": 2}
        wait_until(lambda: proxy.status()[HOST]["stopsPostponed"] >= 2, 15, "idle stops to be postponed")
        status = proxy.status()[HOST]
        assert status["state"] == "ready" and status["stops"] == 0
        assert status["stopPostponed"] == "busy: jobs_running=2"
        postponed = [e for e in log_events(proxy) if e.get("event") == "idle stop postponed"]
        assert postponed and postponed[0]["reason"] == "busy: jobs_running=2"
        [pid] = pids_in(pid_file)
        assert alive(pid)
        # The jobs end: one idle period later it stops.
        assert proxy.get(HOST, "/busy?jobs=0").status_code == 200
        wait_until(lambda: proxy.status()[HOST]["state"] == "stopped", 15, "the idle stop once the jobs end")
        wait_until(lambda: not alive(pid), 10, "the process to exit")


def test_activity_path_null_stops_without_asking(tmp_path):
    config, pid_file = _service(tmp_path, free_port(), idleTimeout=1, activityPath=None)
    with run_proxy(config, tmp_path) as proxy:
        assert proxy.get(HOST, "/busy?jobs=1", timeout=60).status_code == 200
        wait_until(lambda: proxy.status()[HOST]["state"] == "stopped", 15, "the idle stop")
        assert proxy.status()[HOST]["stopsPostponed"] == 0


async def test_a_websocket_session_wakes_the_service_and_keeps_it_up_while_open(tmp_path):
    config, pid_file = _service(tmp_path, free_port(), idleTimeout=1)
    with run_proxy(config, tmp_path) as proxy:
        assert proxy.status()[HOST]["state"] == "stopped"
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{proxy.base}/ws", headers={"Host": HOST}) as ws:
                status = proxy.status()[HOST]
                assert status["state"] == "ready" and status["wakes"] == 1 and status["inFlight"] == 1
                for _ in range(4):  # four idle timeouts without a frame: a session is in flight, not idle
                    await asyncio.sleep(1)
                    assert proxy.status()[HOST]["state"] == "ready"
                # Frames still go both ways, one at a time, each answered before the next is sent.
                for index in range(3):
                    await ws.send_str(f"frame {index}")
                    assert await ws.receive_str(timeout=5) == f"echo: frame {index}"
                await ws.send_bytes(b"\x00" * 70_000)
                assert await ws.receive_bytes(timeout=5) == b"\x00" * 70_000
        assert proxy.status()[HOST]["stops"] == 0
        wait_until(lambda: proxy.status()[HOST]["state"] == "stopped", 15, "the idle stop after the session")
        [pid] = pids_in(pid_file)
        wait_until(lambda: not alive(pid), 10, "the process to exit")


async def test_a_websocket_message_over_the_limit_closes_that_session_only(tmp_path):
    """aiohttp holds a whole message before relaying it: past WEBSOCKET_MAX_MESSAGE_BYTES the session is closed
    (1009, message too big) instead of the proxy's memory growing; other sessions and HTTP keep working."""
    from autostart.proxy import WEBSOCKET_MAX_MESSAGE_BYTES

    port = free_port()
    # The backend itself accepts far larger messages, so the close can only come from the proxy's limit.
    backend = backend_command(port) + ["--ws-max-size", str(8 * WEBSOCKET_MAX_MESSAGE_BYTES)]
    config, _ = _service(tmp_path, port, idleTimeout=30, startCommand=backend)
    with run_proxy(config, tmp_path) as proxy:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{proxy.base}/ws", headers={"Host": HOST}, max_msg_size=0) as ws:
                try:
                    await ws.send_bytes(b"\x00" * (WEBSOCKET_MAX_MESSAGE_BYTES + 1))
                    message = await ws.receive(timeout=30)
                except ConnectionError:  # the proxy closed while the message was still being sent
                    pass
                else:
                    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                            aiohttp.WSMsgType.CLOSING), message
                    assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
            async with session.ws_connect(f"{proxy.base}/ws", headers={"Host": HOST}) as ws:
                await ws.send_str("still here")
                assert await ws.receive_str(timeout=5) == "echo: still here"
        assert proxy.status()[HOST]["state"] == "ready"
