"""Reloading the config: `systemctl reload` runs the unit's ExecReload (SIGHUP to the proxy), against a real proxy
process and real backend processes. Requests in flight (a streaming response, a slow upload, a slow GET, an open
WebSocket, a steady stream of short requests) all finish; the new config is in force afterwards; a file that does
not validate leaves the running config as it was; services that are replaced or removed finish their requests
before they are let go."""
from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import httpx
import pytest

from autostart.config import parse_config
from autostart.reload import plan_reload
from tests.support import ROOT, free_port

from .conftest import (
    SOCKET_UNIT,
    UNIT,
    ProxyHandle,
    alive,
    command_service,
    log_events,
    reload_with,
    run_proxy,
    unit_service_section,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

HOST = "backend.test"
ADDED = "added.test"
REPLACED = "replaced.test"
REMOVED = "removed.test"


def backend(port: int, name: str, **extra: Any) -> dict[str, Any]:
    return command_service(port, name=name, env={"BACKEND_NAME": name}, **extra)


# -- the unit ----------------------------------------------------------------------------------------------------


def test_the_unit_reloads_with_sighup_and_restarts_after_any_exit_but_a_stop(tmp_path):
    service = unit_service_section()
    assert shlex.split(service["ExecReload"]) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert service["Restart"] == "always"
    assert 1 <= float(service["RestartSec"]) <= 10
    # Its socket unit holds the listening socket across restarts (make up's restarts refuse no connection).
    unit = UNIT.read_text()
    assert "Requires=docker.service docker-autostart.socket" in unit
    assert "ListenStream=127.0.0.1:8890" in SOCKET_UNIT.read_text()
    if shutil.which("systemd-analyze") is None:
        return
    # The two units as systemd reads them: no unknown key, no bad value (ExecStart pointed at this checkout's proxy).
    text = "\n".join(f"ExecStart={ROOT / '.venv' / 'bin' / 'autostart'} --config /dev/null"
                     if line.startswith("ExecStart=") else line for line in unit.splitlines())
    (tmp_path / "docker-autostart.service").write_text(text + "\n")
    shutil.copy(SOCKET_UNIT, tmp_path / "docker-autostart.socket")
    verdict = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "docker-autostart.socket"),
                              str(tmp_path / "docker-autostart.service")], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (verdict.stdout + verdict.stderr).splitlines()
                  if "docker.service" not in line and "User" not in line]
    assert verdict.returncode == 0 and not complaints, complaints


# -- what a reload changes, decided without I/O ------------------------------------------------------------------


def test_the_plan_keeps_unchanged_and_retuned_services_and_replaces_the_ones_started_differently(tmp_path):
    def config(**services: dict[str, Any]) -> Any:
        return parse_config({"services": {f"{host}.test": svc for host, svc in services.items()}}, tmp_path)

    same, tuned, moved, gone = (command_service(port, name=n) for port, n in
                                ((9001, "same"), (9002, "tuned"), (9003, "moved"), (9004, "gone")))
    running = config(same=same, tuned=tuned, moved=moved, gone=gone)
    wanted = config(same=same, tuned={**tuned, "idleTimeout": 5, "ignoreUserAgents": ["bot"], "maxWaiting": 3},
                    moved={**moved, "proxyPort": 9013}, new=command_service(9005, name="new"))
    plan = plan_reload(running, wanted)
    assert (plan.unchanged, plan.retuned, plan.replaced, plan.added, plan.removed) == (
        ["same.test"], ["tuned.test"], ["moved.test"], ["new.test"], ["gone.test"])
    assert plan_reload(running, running).unchanged == list(running.services)
    # A change to what the provider reads (here how long a stop may take) is a new service, not a retune.
    assert plan_reload(running, config(same={**same, "stopTimeout": 9}, tuned=tuned, moved=moved,
                                       gone=gone)).replaced == ["same.test"]


# -- a reload while requests are in flight -----------------------------------------------------------------------


@pytest.fixture
def busy_proxy(tmp_path) -> Iterator[tuple[ProxyHandle, dict[str, Any]]]:
    config = {"services": {HOST: backend(free_port(), "backend", idleTimeout=0)}, "checkInterval": 0.3}
    with run_proxy(config, tmp_path, name="reload") as proxy:
        assert proxy.get(HOST, "/echo", timeout=60).status_code == 200
        yield proxy, config


def test_a_reload_while_requests_stream_drops_none_and_puts_the_new_config_in_force(busy_proxy):
    proxy, config = busy_proxy
    pid = proxy.get(HOST, "/echo").json()["pid"]
    reloaded = threading.Event()
    stop_steady = threading.Event()
    upload_chunks, chunk = 30, b"u" * 65536

    def stream_events() -> list[str]:  # fast path: a GET whose answer streams for ~4 s
        with httpx.stream("GET", f"{proxy.base}/sse?count=10&interval=0.4", headers={"Host": HOST},
                          timeout=30) as response:
            assert response.status_code == 200
            return [line for line in response.iter_lines() if line.startswith("data: ")]

    def slow_upload() -> httpx.Response:  # full path: a body that arrives over ~3 s
        def body() -> Iterator[bytes]:
            for _ in range(upload_chunks):
                time.sleep(0.1)
                yield chunk
        return httpx.post(f"{proxy.base}/upload", content=body(), headers={"Host": HOST}, timeout=30)

    def websocket() -> list[str]:  # full path: a session open across the reload
        async def session() -> list[str]:
            async with aiohttp.ClientSession() as client, \
                    client.ws_connect(f"{proxy.base}/ws", headers={"Host": HOST}) as ws:
                await ws.send_str("before")
                replies = [await ws.receive_str(timeout=10)]
                while not reloaded.is_set():
                    await asyncio.sleep(0.05)
                await ws.send_str("after")
                replies.append(await ws.receive_str(timeout=10))
                return replies
        return asyncio.run(session())

    def steady() -> list[int]:  # short requests on both paths, all the time
        statuses = []
        with httpx.Client(headers={"Host": HOST}, timeout=30) as client:
            while not stop_steady.is_set():
                statuses.append(client.get(f"{proxy.base}/echo").status_code)
                statuses.append(client.post(f"{proxy.base}/echo", content=b"x").status_code)
        return statuses

    new_config = json.loads(json.dumps(config))
    new_config["services"][HOST]["idleTimeout"] = 600
    new_config["services"][ADDED] = backend(free_port(), "added", idleTimeout=0)
    with ThreadPoolExecutor(6) as pool:
        events = pool.submit(stream_events)
        upload = pool.submit(slow_upload)
        slow = pool.submit(proxy.get, HOST, "/slow?seconds=3")
        session = pool.submit(websocket)
        short = pool.submit(steady)
        wait_until(lambda: proxy.status()[HOST]["inFlight"] >= 4, 10, "four long requests in flight")
        line = reload_with(proxy, new_config)
        reloaded.set()
        assert line["event"] == "config reloaded" and line["retuned"] == [HOST] and line["added"] == [ADDED]
        assert len(events.result(timeout=30)) == 11  # ten events and [DONE]
        assert upload.result(timeout=30).json()["bodyBytes"] == upload_chunks * len(chunk)
        assert slow.result(timeout=30).json()["slept"] == 3
        assert session.result(timeout=30) == ["echo: before", "echo: after"]
        stop_steady.set()
        statuses = short.result(timeout=30)
    assert statuses and set(statuses) == {200}, f"{len([s for s in statuses if s != 200])} of the short requests failed"
    # The new config is in force; the service it kept was neither stopped nor started again.
    status = proxy.status()
    assert status[HOST]["idleTimeout"] == 600 and status[HOST]["wakes"] == 1 and status[HOST]["stops"] == 0
    assert proxy.get(HOST, "/echo").json()["pid"] == pid
    added = proxy.get(ADDED, "/echo", timeout=60)
    assert added.status_code == 200 and added.json()["name"] == "added"
    assert proxy.status()[ADDED]["wakes"] == 1


def test_a_config_that_does_not_validate_is_refused_and_the_running_one_stays(busy_proxy):
    proxy, config = busy_proxy
    pid = proxy.get(HOST, "/echo").json()["pid"]
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(proxy.get, HOST, "/slow?seconds=2")
        wait_until(lambda: proxy.status()[HOST]["inFlight"] == 1, 10, "the request in flight")
        line = reload_with(proxy, '{"services": {')
        assert slow.result(timeout=30).status_code == 200
    assert line["event"] == "config reload refused: the running config stays in force" and line["level"] == "error"
    assert "not valid JSON" in line["reason"] and line["path"] == str(proxy.config_path)
    broken = json.loads(json.dumps(config))
    broken["services"][HOST]["idleTimeout"] = -5
    broken["services"][ADDED] = backend(free_port(), "added")
    line = reload_with(proxy, broken)
    assert f"services['{HOST}'].idleTimeout" in line["reason"] and "\n" not in line["reason"]
    # Nothing of the refused file took effect; the proxy and its service run on as before.
    assert alive(proxy.pid) and set(proxy.status()) == {HOST} and proxy.status()[HOST]["idleTimeout"] == 0
    assert proxy.get(ADDED, "/echo").status_code == 404
    assert proxy.get(HOST, "/echo").json()["pid"] == pid
    # And a good file after a bad one is taken.
    config["services"][HOST]["idleTimeout"] = 30
    assert reload_with(proxy, config)["event"] == "config reloaded"
    assert proxy.status()[HOST]["idleTimeout"] == 30


def test_replaced_and_removed_services_finish_their_requests_before_they_are_let_go(tmp_path):
    replaced_port = free_port()
    config = {"services": {REPLACED: backend(replaced_port, "old", idleTimeout=0),
                           REMOVED: backend(free_port(), "removed", idleTimeout=0)},
              "checkInterval": 0.3}
    with run_proxy(config, tmp_path, name="reload-replace") as proxy:
        old_pid = proxy.get(REPLACED, "/echo", timeout=60).json()["pid"]
        removed_pid = proxy.get(REMOVED, "/echo", timeout=60).json()["pid"]
        # The new service runs on the same port: it must not start (or adopt the old process) before the old one
        # has answered its request and been stopped.
        wanted = {"services": {REPLACED: backend(replaced_port, "new", idleTimeout=0)}, "checkInterval": 0.3}
        with ThreadPoolExecutor(3) as pool:
            old_slow = pool.submit(proxy.get, REPLACED, "/slow?seconds=3")
            removed_slow = pool.submit(httpx.post, f"{proxy.base}/slow?seconds=3", headers={"Host": REMOVED},
                                       timeout=30)
            wait_until(lambda: all(s["inFlight"] == 1 for s in proxy.status().values()), 10, "both in flight")
            line = reload_with(proxy, wanted)
            assert line["replaced"] == [REPLACED] and line["removed"] == [REMOVED]
            held = pool.submit(proxy.get, REPLACED, "/echo", timeout=60)
            assert proxy.get(REMOVED, "/echo").status_code == 404  # gone for new requests at once
            assert old_slow.result(timeout=30).json() == {"name": "old", "slept": 3}
            assert removed_slow.result(timeout=30).json() == {"name": "removed", "slept": 3}
            answer = held.result(timeout=60)
        assert answer.status_code == 200 and answer.json()["name"] == "new" and answer.json()["pid"] != old_pid
        wait_until(lambda: not alive(old_pid) and not alive(removed_pid), 15, "the old processes to be stopped")
        status = proxy.status()
        assert set(status) == {REPLACED} and status[REPLACED]["wakes"] == 1
        assert any(e.get("event") == "service let go after a reload" and e.get("service") == "removed"
                   for e in log_events(proxy))
