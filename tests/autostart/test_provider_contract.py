"""One contract, every provider: the same behaviour from `docker` (real Engine) and `command` (real process)."""
from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import pytest

from autostart.config import ServiceConfig
from autostart.errors import StartFailed, StopFailed
from autostart.providers import create_provider
from autostart.providers.base import Provider
from tests.support import free_port

from .conftest import backend_command

pytestmark = pytest.mark.timeout(120)

MakeProvider = Callable[..., Provider]


@pytest.fixture(params=["docker", "command"])
def make_provider(request) -> MakeProvider:
    """make_provider(port, crash=False) → a provider for a service on `port` (that exits at once if crash)."""
    if request.param == "docker":
        make_container = request.getfixturevalue("make_container")

        def docker_provider(port: int, crash: bool = False) -> Provider:
            name = make_container(port, command=["/bin/sh", "-c", "exit 3"] if crash else None)
            return create_provider(ServiceConfig(name="svc", proxy_port=port, containers=[name], stop_timeout=1))

        return docker_provider

    def command_provider(port: int, crash: bool = False) -> Provider:
        argv = [sys.executable, "-c", "import sys; sys.exit(3)"] if crash else backend_command(port)
        return create_provider(
            ServiceConfig(name="svc", provider="command", proxy_port=port, start_command=argv, stop_timeout=3)
        )

    return command_provider


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_start_readiness_stop(make_provider):
    provider = make_provider(free_port())
    try:
        assert not await provider.is_running()
        assert not await provider.is_ready()
        await provider.start()
        await provider.start()  # idempotent while it runs
        await eventually(provider.is_ready)
        assert await provider.is_running()
        await provider.stop()
        assert not await provider.is_running()
        assert not await provider.is_ready()
        await provider.start()  # and it can be started again
        await eventually(provider.is_ready)
    finally:
        await provider.stop()
        await provider.close()


async def test_a_service_that_exits_while_starting_fails_readiness_with_its_code(make_provider):
    provider = make_provider(free_port(), crash=True)
    try:
        await provider.start()
        with pytest.raises(StartFailed, match="exited with code 3"):
            await eventually(provider.is_ready, timeout=20)
    finally:
        await provider.close()


async def test_stopping_a_stopped_service_is_harmless(make_provider):
    provider = make_provider(free_port())
    try:
        await provider.stop()
        assert not await provider.is_running()
    except StopFailed as exc:  # pragma: no cover - the contract says it must not raise
        pytest.fail(f"stop of a stopped service raised {exc}")
    finally:
        await provider.close()
