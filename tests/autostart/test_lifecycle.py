"""The wake/idle state machine with a fake provider and a fake clock: no sockets, no real sleeping."""
from __future__ import annotations

import asyncio

import pytest

from autostart.errors import ServiceFailed, StartBackoff, StartFailed, StartTimeout, TooManyWaiting
from autostart.lifecycle import ServiceLifecycle, State, Timing

from .fakes import FakeActivity, FakeClock, FakeProvider, settle

pytestmark = pytest.mark.timeout(20)


def make(clock: FakeClock, provider: FakeProvider, *, start_timeout: float = 60, idle_timeout: float = 900,
         max_waiting: int = 1000, progress_timeout: float = 0, activity: FakeActivity | None = None,
         failed_start_backoff: float = 0) -> ServiceLifecycle:
    return ServiceLifecycle(
        "svc", provider, Timing(start_timeout=start_timeout, idle_timeout=idle_timeout, max_waiting=max_waiting,
                                poll_interval=0.1, progress_timeout=progress_timeout,
                                failed_start_backoff=failed_start_backoff),
        clock=clock, activity=activity,
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


async def test_a_declared_failure_fails_every_waiter_at_once_and_backs_off_before_the_next_start(clock, provider):
    provider.declares_failure = "preload failed: model 'base' not found"
    lifecycle = make(clock, provider, start_timeout=300, failed_start_backoff=10)
    waiters = [asyncio.create_task(lifecycle.acquire()) for _ in range(3)]
    await clock.advance(0.5)  # one probe after the start: well before start_timeout
    for waiter in waiters:
        with pytest.raises(ServiceFailed, match="model 'base' not found"):
            waiter.result()
    assert provider.stop_calls == 1 and lifecycle.state is State.STOPPED
    assert lifecycle.backoff_left() == pytest.approx(10, abs=0.6)

    # Within the back-off: refused at once with the same reason, and nothing is started.
    with pytest.raises(StartBackoff, match="model 'base' not found") as refused:
        await lifecycle.acquire()
    assert 0 < refused.value.retry_after <= 10 and provider.start_calls == 1
    assert lifecycle.snapshot()["failedStartsInARow"] == 1

    # After it: the next request tries again; a second failure doubles the back-off.
    await clock.advance(10)
    second = asyncio.create_task(lifecycle.acquire())
    await clock.advance(0.5)
    with pytest.raises(ServiceFailed):
        second.result()
    assert provider.start_calls == 2 and lifecycle.backoff_left() == pytest.approx(20, abs=0.6)

    # Fixed by the operator: after the back-off the start succeeds and the count resets.
    provider.declares_failure = None
    await clock.advance(20)
    third = asyncio.create_task(lifecycle.acquire())
    await clock.advance(2.5)
    assert third.exception() is None and lifecycle.state is State.READY
    assert lifecycle.failures_in_a_row == 0 and lifecycle.backoff_left() == 0


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


# -- a start that fails is cleaned up; one that makes progress is not ------------------------------------


async def test_a_start_that_times_out_is_stopped_again(clock, provider):
    provider.boot_seconds = 10**6  # never healthy
    lifecycle = make(clock, provider, start_timeout=5)
    waiter = asyncio.create_task(lifecycle.acquire())
    await clock.advance(5.5)
    with pytest.raises(StartTimeout):
        waiter.result()
    await settle()
    assert provider.stop_calls == 1 and not provider.running
    assert lifecycle.state is State.STOPPED and lifecycle.stops == 1


async def test_a_start_that_fails_is_stopped_and_a_request_during_that_stop_starts_afresh(clock, provider):
    provider.dies_while_starting = True
    provider.stop_gate = asyncio.Event()
    lifecycle = make(clock, provider)
    first = asyncio.create_task(lifecycle.acquire())
    await clock.advance(0.5)
    with pytest.raises(StartFailed):
        first.result()
    assert lifecycle.state is State.STOPPING and provider.stop_calls == 1
    provider.dies_while_starting = False
    second = asyncio.create_task(lifecycle.acquire())
    await clock.advance(1)
    assert not second.done() and provider.start_calls == 1  # waits for the stop first
    provider.stop_gate.set()
    await clock.advance(2.5)
    assert second.exception() is None and provider.start_calls == 2 and lifecycle.state is State.READY


async def test_a_start_reporting_progress_goes_on_past_start_timeout(clock, provider):
    provider.boot_seconds = 100  # a model download of 100 s
    lifecycle = make(clock, provider, start_timeout=10, progress_timeout=600)
    early = asyncio.create_task(lifecycle.acquire())
    for second in range(60):
        provider.progress = {"cacheBytes": second * 1000}
        await clock.advance(1)
    with pytest.raises(StartTimeout):  # the request waited its start_timeout…
        early.result()
    # …but the start goes on: nothing stopped, still one wake.
    assert lifecycle.state is State.STARTING and provider.stop_calls == 0 and provider.start_calls == 1
    assert lifecycle.snapshot()["startProgress"] == {"cacheBytes": 59000}
    for second in range(60, 95):
        provider.progress = {"cacheBytes": second * 1000}
        await clock.advance(1)
    late = asyncio.create_task(lifecycle.acquire())
    for second in range(95, 101):
        provider.progress = {"cacheBytes": second * 1000}
        await clock.advance(1)
    assert late.exception() is None and lifecycle.state is State.READY
    assert provider.start_calls == 1 and lifecycle.wakes == 1 and lifecycle.snapshot()["startProgress"] is None


async def test_a_start_whose_progress_stalls_times_out_one_start_timeout_later(clock, provider):
    provider.boot_seconds = 10**6
    lifecycle = make(clock, provider, start_timeout=10, progress_timeout=600)
    lifecycle.wake()
    for second in range(30):
        provider.progress = second
        await clock.advance(1)
    await clock.advance(8.5)  # the last change was seen at about t=29: the start may go on to t=39
    assert lifecycle.state is State.STARTING
    await clock.advance(1)
    assert lifecycle.state is State.STOPPED and provider.stop_calls == 1


async def test_progress_never_extends_a_start_past_progress_timeout(clock, provider):
    provider.boot_seconds = 10**6
    lifecycle = make(clock, provider, start_timeout=10, progress_timeout=50)
    lifecycle.wake()
    for second in range(49):
        provider.progress = second
        await clock.advance(1)
    assert lifecycle.state is State.STARTING
    for second in range(49, 53):
        provider.progress = second
        await clock.advance(1)
    assert lifecycle.state is State.STOPPED and provider.stop_calls == 1


async def test_without_progress_timeout_progress_changes_nothing(clock, provider):
    provider.boot_seconds = 10**6
    lifecycle = make(clock, provider, start_timeout=10, progress_timeout=0)
    lifecycle.wake()
    for second in range(11):
        provider.progress = second
        await clock.advance(1)
    assert lifecycle.state is State.STOPPED


# -- the activity probe: work under way postpones an idle stop ---------------------------------------------


async def ready_service(clock, provider, **kwargs) -> ServiceLifecycle:
    provider.adopt_running()
    lifecycle = make(clock, provider, **kwargs)
    assert await lifecycle.adopt()
    return lifecycle


async def test_a_busy_service_is_not_stopped_and_says_why(clock, provider):
    activity = FakeActivity()
    activity.answer = "busy: jobs_running=1"
    lifecycle = await ready_service(clock, provider, idle_timeout=300, activity=activity)
    await clock.advance(299)
    await lifecycle.check()
    assert activity.calls == 0  # not asked before the service is idle
    await clock.advance(2)
    await lifecycle.check()
    await settle()
    assert lifecycle.state is State.READY and provider.stop_calls == 0 and activity.calls == 1
    snapshot = lifecycle.snapshot()
    assert snapshot["stopPostponed"] == "busy: jobs_running=1" and snapshot["stopsPostponed"] == 1
    # The job ends: the idle timer was re-armed when it was seen busy, so the stop comes one idle period later.
    activity.answer = None
    await clock.advance(299)
    await lifecycle.check()
    assert lifecycle.state is State.READY and activity.calls == 1
    await clock.advance(2)
    await lifecycle.check()
    await settle()
    assert lifecycle.state is State.STOPPED and provider.stop_calls == 1 and activity.calls == 2


async def test_an_activity_probe_that_fails_lets_the_stop_go_ahead(clock, provider):
    activity = FakeActivity()
    activity.error = OSError("connection refused")
    lifecycle = await ready_service(clock, provider, idle_timeout=100, activity=activity)
    await clock.advance(101)
    await lifecycle.check()
    await settle()
    assert lifecycle.state is State.STOPPED and activity.calls == 1


async def test_a_request_arriving_while_activity_is_asked_cancels_the_stop(clock, provider):
    activity = FakeActivity()
    activity.gate = asyncio.Event()
    lifecycle = await ready_service(clock, provider, idle_timeout=100, activity=activity)
    await clock.advance(101)
    checking = asyncio.create_task(lifecycle.check())
    await settle()
    assert lifecycle.try_acquire()  # a request slips in while the probe is out
    activity.gate.set()
    await checking
    await settle()
    assert lifecycle.state is State.READY and provider.stop_calls == 0
    lifecycle.release()


async def test_in_flight_requests_stop_nothing_and_ask_nothing(clock, provider):
    activity = FakeActivity()
    lifecycle = await ready_service(clock, provider, idle_timeout=100, activity=activity)
    assert lifecycle.try_acquire()
    await clock.advance(500)
    await lifecycle.check()
    assert activity.calls == 0 and lifecycle.state is State.READY


async def test_a_dropped_connection_makes_it_look_again_at_once(clock, provider):
    lifecycle = await ready_service(clock, provider)
    lifecycle.upstream_failed()  # a reset, but the service still runs: it stays ready
    await clock.advance(2)
    assert lifecycle.state is State.READY
    provider.running = False  # killed: the next reset finds it gone well before a periodic check
    lifecycle.upstream_failed()
    await clock.advance(0.1)
    assert lifecycle.state is State.STOPPED and lifecycle.stops == 1
