"""The wake/idle state machine with a fake provider and a fake clock: no sockets, no real sleeping."""
from __future__ import annotations

import asyncio

import pytest

from autostart.errors import StartFailed, StartTimeout, TooManyWaiting
from autostart.lifecycle import ServiceLifecycle, State, Timing

from .fakes import FakeClock, FakeProvider, settle

pytestmark = pytest.mark.timeout(20)


def make(clock: FakeClock, provider: FakeProvider, *, start_timeout: float = 60, idle_timeout: float = 900,
         max_waiting: int = 1000) -> ServiceLifecycle:
    return ServiceLifecycle(
        "svc", provider, Timing(start_timeout=start_timeout, idle_timeout=idle_timeout, max_waiting=max_waiting,
                                poll_interval=0.1),
        clock=clock,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(clock: FakeClock) -> FakeProvider:
    return FakeProvider(clock, boot_seconds=2.0)


async def test_fifty_waiters_share_one_start_and_are_released_together(clock, provider):
    lifecycle = make(clock, provider)
    waiters = [asyncio.create_task(lifecycle.acquire()) for _ in range(50)]
    await clock.advance(1.0)
    assert lifecycle.state is State.STARTING
    assert lifecycle.waiting == 50
    assert not any(w.done() for w in waiters)
    await clock.advance(1.1)
    assert all(w.done() and w.exception() is None for w in waiters)
    assert provider.start_calls == 1
    assert lifecycle.in_flight == 50
    assert lifecycle.state is State.READY
    assert lifecycle.last_wake_seconds == pytest.approx(2.0, abs=0.15)


async def test_start_past_the_timeout_fails_every_waiter_with_how_long_it_waited(clock, provider):
    provider.boot_seconds = 100
    lifecycle = make(clock, provider, start_timeout=10)
    first = asyncio.create_task(lifecycle.acquire())
    await clock.advance(4)
    second = asyncio.create_task(lifecycle.acquire())
    await clock.advance(7)
    for waiter, waited in ((first, 10), (second, 6)):
        with pytest.raises(StartTimeout) as caught:
            waiter.result()
        assert caught.value.waited == pytest.approx(waited, abs=0.2)
    assert lifecycle.state is State.STOPPED
    assert lifecycle.in_flight == 0 and lifecycle.waiting == 0
    assert "not ready within 10s" in (lifecycle.last_error or "")
    # The next request tries again.
    provider.boot_seconds = 1
    provider.running = False
    retry = asyncio.create_task(lifecycle.acquire())
    await clock.advance(1.2)
    assert retry.done() and retry.exception() is None
    assert provider.start_calls == 2


async def test_waiters_beyond_max_waiting_are_refused(clock, provider):
    lifecycle = make(clock, provider, max_waiting=3)
    waiters = [asyncio.create_task(lifecycle.acquire()) for _ in range(3)]
    await settle()
    with pytest.raises(TooManyWaiting):
        await lifecycle.acquire()
    await clock.advance(2.5)
    assert all(w.exception() is None for w in waiters)


async def test_failed_start_reaches_waiters_and_the_next_request_retries(clock, provider):
    provider.start_error = "no such container: svc"
    lifecycle = make(clock, provider)
    with pytest.raises(StartFailed, match="no such container"):
        await lifecycle.acquire()
    assert lifecycle.state is State.STOPPED and lifecycle.last_error == "no such container: svc"
    provider.start_error = None
    waiter = asyncio.create_task(lifecycle.acquire())
    await clock.advance(2.5)
    assert waiter.exception() is None
    assert lifecycle.last_error is None


async def test_a_service_that_dies_while_starting_fails_fast(clock, provider):
    provider.dies_while_starting = True
    lifecycle = make(clock, provider, start_timeout=60)
    waiter = asyncio.create_task(lifecycle.acquire())
    await clock.advance(0.5)
    with pytest.raises(StartFailed, match="exited with code 3"):
        waiter.result()


async def test_idle_service_is_stopped_after_the_timeout(clock, provider):
    lifecycle = make(clock, provider, idle_timeout=300)
    acquiring = asyncio.create_task(lifecycle.acquire())
    await clock.advance(2.5)
    await acquiring
    lifecycle.release()
    await clock.advance(299)
    await lifecycle.check()
    assert lifecycle.state is State.READY and provider.stop_calls == 0
    await clock.advance(2)
    await lifecycle.check()
    await settle()
    assert lifecycle.state is State.STOPPED and provider.stop_calls == 1 and lifecycle.stops == 1


async def test_never_stopped_while_a_request_is_in_flight(clock, provider):
    lifecycle = make(clock, provider, idle_timeout=60)
    acquiring = asyncio.create_task(lifecycle.acquire())
    await clock.advance(2.5)
    await acquiring
    for _ in range(20):  # a twenty-minute transcription
        await clock.advance(60)
        await lifecycle.check()
    assert lifecycle.state is State.READY and provider.stop_calls == 0
    lifecycle.release()
    await clock.advance(59)
    await lifecycle.check()
    assert lifecycle.state is State.READY
    await clock.advance(2)
    await lifecycle.check()
    await settle()
    assert lifecycle.state is State.STOPPED


async def test_idle_timeout_zero_never_stops(clock, provider):
    provider.adopt_running()
    lifecycle = make(clock, provider, idle_timeout=0)
    assert await lifecycle.adopt()
    await clock.advance(10**6)
    await lifecycle.check()
    assert lifecycle.state is State.READY and provider.stop_calls == 0


async def test_ignored_requests_do_not_keep_the_service_awake(clock, provider):
    lifecycle = make(clock, provider, idle_timeout=100)
    provider.adopt_running()
    await lifecycle.adopt()
    for _ in range(5):
        await clock.advance(25)
        assert lifecycle.try_acquire(touch=False)
        lifecycle.release(touch=False)
    await lifecycle.check()
    await settle()
    assert lifecycle.state is State.STOPPED


async def test_stopped_from_outside_is_noticed_and_woken_again(clock, provider):
    lifecycle = make(clock, provider)
    provider.adopt_running()
    await lifecycle.adopt()
    provider.running = False  # `docker kill` behind our back
    await lifecycle.check()
    assert lifecycle.state is State.STOPPED
    waiter = asyncio.create_task(lifecycle.acquire())
    await clock.advance(2.5)
    assert waiter.exception() is None and provider.start_calls == 1


async def test_adopts_a_running_service_without_starting_it(clock, provider):
    provider.adopt_running()
    lifecycle = make(clock, provider, idle_timeout=50)
    assert await lifecycle.adopt()
    assert lifecycle.state is State.READY
    assert lifecycle.try_acquire()
    lifecycle.release()
    assert provider.start_calls == 0
    await clock.advance(51)  # its idle clock started at adoption
    await lifecycle.check()
    await settle()
    assert lifecycle.state is State.STOPPED


async def test_request_during_a_stop_waits_for_it_then_wakes(clock, provider):
    provider.adopt_running()
    provider.stop_gate = asyncio.Event()
    lifecycle = make(clock, provider, idle_timeout=10)
    await lifecycle.adopt()
    await clock.advance(11)
    await lifecycle.check()
    assert lifecycle.state is State.STOPPING
    waiter = asyncio.create_task(lifecycle.acquire())
    await clock.advance(1)
    assert not waiter.done() and provider.start_calls == 0
    provider.stop_gate.set()
    await settle()
    assert lifecycle.state is State.STARTING and provider.start_calls == 1
    await clock.advance(2.5)
    assert waiter.exception() is None and lifecycle.state is State.READY


async def test_a_waiter_that_goes_away_does_not_cancel_the_start(clock, provider):
    lifecycle = make(clock, provider)
    leaving = asyncio.create_task(lifecycle.acquire())
    staying = asyncio.create_task(lifecycle.acquire())
    await clock.advance(0.5)
    leaving.cancel()
    await settle()
    assert lifecycle.waiting == 1
    await clock.advance(2)
    assert staying.exception() is None and lifecycle.in_flight == 1
    assert provider.start_calls == 1


async def test_background_wake_is_single_flight_too(clock, provider):
    lifecycle = make(clock, provider)
    wakes = {id(lifecycle.wake()) for _ in range(10)}
    assert len(wakes) == 1
    await clock.advance(2.5)
    assert lifecycle.state is State.READY and provider.start_calls == 1
