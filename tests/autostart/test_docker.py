"""The proxy against a real Docker Engine: containers from a busybox image, woken and stopped for real."""
from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support import free_port, require

from .conftest import docker_service, log_events, reload_with, run_proxy, start_events, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

HOST = "svc.test"


def container_status(docker_client, name: str) -> str:
    return docker_client.containers.get(name).status


def test_cold_request_wakes_the_stopped_container_and_gets_its_answer(docker_client, make_container, tmp_path):
    port = free_port()
    name = make_container(port)
    with run_proxy(docker_service(HOST, name, port), tmp_path) as proxy:
        assert proxy.status()[HOST]["state"] == "stopped"
        response = proxy.get(HOST, "/index.html")
        assert response.status_code == 200
        assert response.text == "hello from the busybox backend\n"
        assert container_status(docker_client, name) == "running"
        status = proxy.status()[HOST]
        assert status["state"] == "ready" and status["wakes"] == 1 and status["lastWakeSeconds"] > 0
        assert 'autostart_wakes_total{outcome="ok",service="svc"} 1.0' in proxy.metrics()


def test_fifty_concurrent_requests_during_one_wake_start_it_once(docker_client, make_container, tmp_path):
    port = free_port()
    name = make_container(port, delay=1.5)
    since = time.time()
    with run_proxy(docker_service(HOST, name, port), tmp_path) as proxy:
        with ThreadPoolExecutor(50) as pool:
            responses = list(pool.map(lambda _: proxy.get(HOST, "/health", timeout=60), range(50)))
        assert [r.status_code for r in responses] == [200] * 50
        assert all(r.text == "ok\n" for r in responses)
        assert start_events(docker_client, name, since) == 1
        assert proxy.status()[HOST]["wakes"] == 1


def test_idle_stop_after_the_timeout_but_never_during_a_long_request(docker_client, make_container, tmp_path):
    port = free_port()
    name = make_container(port)
    with run_proxy(docker_service(HOST, name, port, idleTimeout=1.5), tmp_path) as proxy:
        started = time.monotonic()
        response = proxy.get(HOST, "/cgi-bin/slow?5", timeout=30)  # three idle timeouts long
        assert response.status_code == 200 and "slept 5" in response.text
        assert time.monotonic() - started >= 5
        assert proxy.status()[HOST]["stops"] == 0
        wait_until(lambda: container_status(docker_client, name) == "exited", 15, "the idle stop")
        status = proxy.status()[HOST]
        assert status["state"] == "stopped" and status["stops"] == 1
        assert 'autostart_stops_total{reason="idle",service="svc"} 1.0' in proxy.metrics()


def test_blocking_request_gets_504_past_the_start_timeout(make_container, tmp_path):
    port = free_port()
    name = make_container(port, delay=60)
    with run_proxy(docker_service(HOST, name, port, startTimeout=1.5), tmp_path) as proxy:
        started = time.monotonic()
        response = proxy.get(HOST, "/health")
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        body = response.json()
        assert body["service"] == "svc" and "within 1.5s" in body["error"]
        assert 1.4 <= body["waited"] <= 3 and elapsed < 5
        assert response.headers["Retry-After"].isdigit()
        assert proxy.status()[HOST]["lastError"]


def test_non_blocking_answers_503_then_serves_once_up(make_container, tmp_path):
    port = free_port()
    name = make_container(port, delay=1.5)
    with run_proxy(docker_service(HOST, name, port, blocking=False), tmp_path) as proxy:
        page = proxy.get(HOST, "/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
        assert "Starting svc" in page.text and 'http-equiv="refresh"' in page.text
        api = proxy.get(HOST, "/health", headers={"Accept": "application/json"})
        assert api.status_code == 503 and api.json()["service"] == "svc" and "Retry-After" in api.headers
        wait_until(lambda: proxy.get(HOST, "/health").status_code == 200, 20, "the service to come up")
        assert proxy.status()[HOST]["wakes"] == 1


def test_container_killed_from_outside_is_woken_again(docker_client, make_container, tmp_path):
    port = free_port()
    name = make_container(port)
    since = time.time()
    with run_proxy(docker_service(HOST, name, port), tmp_path) as proxy:
        assert proxy.get(HOST, "/health").status_code == 200
        docker_client.containers.get(name).kill()
        wait_until(lambda: proxy.status()[HOST]["state"] == "stopped", 10, "the proxy to notice the kill")
        assert proxy.get(HOST, "/health").status_code == 200
        assert start_events(docker_client, name, since) == 2
        # Killed again and asked at once, before the periodic check: the refused connection is noticed.
        docker_client.containers.get(name).kill()
        assert proxy.get(HOST, "/health").status_code == 200


def test_missing_container_is_a_clear_error_then_works_once_created(make_container, tmp_path):
    port = free_port()
    name = f"autostart-test-missing-{port}"
    with run_proxy(docker_service(HOST, name, port), tmp_path) as proxy:
        response = proxy.get(HOST, "/health")
        assert response.status_code == 502
        body = response.json()
        assert body["service"] == "svc" and f"no such container: {name}" in body["error"]
        assert proxy.status()[HOST]["lastError"].startswith("no such container")
        make_container(port, name=name)
        assert proxy.get(HOST, "/health").status_code == 200


def test_restarted_proxy_adopts_the_running_service_without_restarting_it(docker_client, make_container, tmp_path):
    port = free_port()
    name = make_container(port)
    config = docker_service(HOST, name, port)
    with run_proxy(config, tmp_path, name="first") as proxy:
        assert proxy.get(HOST, "/health").status_code == 200
    started_at = docker_client.containers.get(name).attrs["State"]["StartedAt"]
    since = time.time()
    with run_proxy(config, tmp_path, name="second") as proxy:
        assert proxy.status()[HOST]["state"] == "ready"
        assert proxy.get(HOST, "/health").status_code == 200
        assert proxy.status()[HOST]["wakes"] == 0
    assert docker_client.containers.get(name).attrs["State"]["StartedAt"] == started_at
    assert start_events(docker_client, name, since) == 0


def test_docker_healthcheck_status_decides_readiness(docker_client, make_container, tmp_path):
    port = free_port()
    name = make_container(port, healthcheck=True)
    # The HTTP probe would never pass on this path: readiness can only come from Docker's `healthy`.
    config = docker_service(HOST, name, port, healthPath="/no-such-path")
    with run_proxy(config, tmp_path) as proxy:
        response = proxy.get(HOST, "/index.html")
        assert response.status_code == 200
        assert docker_client.api.inspect_container(name)["State"]["Health"]["Status"] == "healthy"


def test_container_that_exits_while_starting_fails_fast_with_its_exit_code(make_container, tmp_path):
    port = free_port()
    name = make_container(port, command=["/bin/sh", "-c", "exit 7"])
    with run_proxy(docker_service(HOST, name, port, startTimeout=30), tmp_path) as proxy:
        started = time.monotonic()
        response = proxy.get(HOST, "/health")
        assert response.status_code == 502 and time.monotonic() - started < 10
        assert "exited with code 7" in response.json()["error"]


def test_unreachable_docker_engine_is_a_clear_error(tmp_path):
    port = free_port()
    config = docker_service(HOST, "whatever", port)
    with run_proxy(config, tmp_path, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}) as proxy:
        response = proxy.get(HOST, "/health")
        assert response.status_code == 502
        assert "Docker Engine unreachable" in response.json()["error"]
        # And the proxy keeps serving.
        assert httpx.get(f"{proxy.base}/_autostart/status", timeout=5).status_code == 200


def _compose_available() -> bool:
    from autostart.providers.docker import _compose_command

    return _compose_command() is not None


def test_missing_container_is_created_with_compose(docker_client, test_images, tmp_path):
    require(_compose_available(), "docker compose or docker-compose (apt-get install docker-compose)")
    port = free_port()
    name = f"autostart-test-compose-{port}"
    project = tmp_path / "svc"
    project.mkdir()
    (project / "docker-compose.yml").write_text(
        f"services:\n  svc:\n    image: {test_images['plain']}\n    container_name: {name}\n"
        f"    network_mode: host\n    restart: \"no\"\n    environment:\n      PORT: \"{port}\"\n"
    )
    config = docker_service(HOST, name, port, composeDir=str(project))
    try:
        with run_proxy(config, tmp_path) as proxy:
            response = proxy.get(HOST, "/index.html", timeout=120)
            assert response.status_code == 200, response.text
            assert container_status(docker_client, name) == "running"
    finally:
        subprocess.run([*_compose_cmd(), "down", "--timeout", "1"], cwd=project, capture_output=True)


def test_a_failing_compose_up_is_a_clear_error(tmp_path):
    require(_compose_available(), "docker compose or docker-compose (apt-get install docker-compose)")
    port = free_port()
    project = tmp_path / "broken"
    project.mkdir()
    (project / "docker-compose.yml").write_text("services:\n  svc:\n    image: autostart-test:no-such-tag\n"
                                               "    pull_policy: never\n")
    config = docker_service(HOST, f"autostart-test-nothing-{port}", port, composeDir=str(project))
    with run_proxy(config, tmp_path) as proxy:
        response = proxy.get(HOST, "/", timeout=120)
        assert response.status_code == 502
        error = response.json()["error"]
        assert "up -d` in" in error and "exited with" in error


def _compose_cmd() -> list[str]:
    from autostart.providers.docker import _compose_command

    return _compose_command() or ["docker-compose"]


def test_waiters_beyond_max_waiting_get_503_with_retry_after(make_container, tmp_path):
    port = free_port()
    name = make_container(port, delay=1.5)
    with run_proxy(docker_service(HOST, name, port, maxWaiting=3), tmp_path) as proxy:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: proxy.get(HOST, "/health", timeout=60), range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 3 and 503 in statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert "already waiting" in refused.json()["error"] and refused.headers["Retry-After"].isdigit()


def test_a_container_that_never_becomes_healthy_gets_504_and_is_stopped_again(docker_client, make_container,
                                                                                  tmp_path):
    port = free_port()
    name = make_container(port)
    # Running, but its health path never answers 2xx: the start times out, and the container must not stay up.
    config = docker_service(HOST, name, port, startTimeout=2, healthPath="/no-such-path", readiness="http")
    with run_proxy(config, tmp_path) as proxy:
        response = proxy.get(HOST, "/index.html")
        assert response.status_code == 504 and "within 2s" in response.json()["error"]
        wait_until(lambda: container_status(docker_client, name) == "exited", 20, "the container to be stopped")
        wait_until(lambda: proxy.status()[HOST]["state"] == "stopped", 10, "status to say stopped")
        status = proxy.status()[HOST]
        assert status["wakes"] == 1 and status["stops"] == 1


def test_a_reload_that_changes_how_a_container_is_probed_adopts_it_running(docker_client, make_container, tmp_path):
    # A new healthPath makes a new service (its probe is the provider's), but the same container serves on: the reload
    # adopts it as it runs, a request in flight finishes, and the container is neither stopped nor started again.
    port = free_port()
    name = make_container(port)
    since = time.time()
    config = docker_service(HOST, name, port, idleTimeout=0)
    with run_proxy(config, tmp_path) as proxy:
        assert proxy.get(HOST, "/index.html").status_code == 200
        config["services"][HOST]["healthPath"] = "/status.txt"
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(proxy.get, HOST, "/cgi-bin/slow?3", timeout=30)
            wait_until(lambda: proxy.status()[HOST]["inFlight"] == 1, 10, "the request in flight")
            assert reload_with(proxy, config)["replaced"] == [HOST]
            status = proxy.status()[HOST]
            assert status["state"] == "ready" and status["wakes"] == 0  # adopted, not woken
            assert proxy.get(HOST, "/index.html").status_code == 200
            assert "slept 3" in slow.result(timeout=30).text
        wait_until(lambda: any(e.get("event") == "service let go after a reload" for e in log_events(proxy)), 10,
                   "the old service to be let go (once its request was answered)")
        assert container_status(docker_client, name) == "running"
        assert start_events(docker_client, name, since) == 1
