"""Overload: bursts of 20 concurrent requests against MAX_CONCURRENCY=1, MAX_QUEUE=2. Every answer is a 200 or a 503
with Retry-After (never a 500, a hang or a dropped connection), and the server's memory does not grow burst to burst."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.probe.conftest import AUDIO_ROUTES
from tests.service_servers import Server
from tests.support import fixture_path

BURST = 20
BURSTS = 3
RSS_GROWTH_LIMIT = 48 * 2**20


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _burst(server: Server, route: str, audio: bytes) -> list[httpx.Response]:
    """BURST requests released together (a barrier), on connections opened beforehand."""
    start = threading.Barrier(BURST)

    def send(client: httpx.Client) -> httpx.Response:
        start.wait()
        return client.post(route, files={"file": ("hotwords.mp3", audio, "audio/mpeg")}, data={"model": "tiny.en"})

    clients = [server.client() for _ in range(BURST)]
    try:
        for client in clients:
            client.get("/health")  # connect now, so the burst is only the uploads
        with ThreadPoolExecutor(BURST) as pool:
            return list(pool.map(send, clients))
    finally:
        for client in clients:
            client.close()


def test_bursts_get_200_or_503_with_retry_after_and_memory_stays_flat(service: Server, service_name: str) -> None:
    route = AUDIO_ROUTES[service_name][0]
    audio = fixture_path("hotwords.mp3").read_bytes()
    rss_after: list[int] = []
    for _ in range(BURSTS):
        responses = _burst(service, route, audio)
        statuses = sorted(response.status_code for response in responses)
        assert set(statuses) <= {200, 503}, statuses
        assert 200 in statuses and 503 in statuses, statuses  # some served, the rest turned away
        for response in responses:
            if response.status_code == 503:
                assert int(response.headers["retry-after"]) > 0
                assert response.json()["error"]["code"] == "server_busy"
        rss_after.append(_rss(service.process.pid))
    # The first burst warms caches and allocator arenas; after it, memory is flat.
    growth = max(rss_after[1:]) - rss_after[1]
    assert growth < RSS_GROWTH_LIMIT, [f"{value / 2**20:.0f} MiB" for value in rss_after]
