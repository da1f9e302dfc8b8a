"""The hold (an upgrade re-creates a service) and the resume after a proxy start (a reboot), in the state machine with
the fake provider and the fake clock: no sockets, no real sleeping."""
from __future__ import annotations

import asyncio

import pytest

from autostart.errors import ProviderUnavailable, StartTimeout
from autostart.lifecycle import ServiceLifecycle, State, Timing

from .fakes import FakeActivity, FakeClock, FakeProvider, settle

pytestmark = pytest.mark.timeout(20)


def make(clock: FakeClock, provider: FakeProvider, *, start_timeout: float = 60, idle_timeout: float = 900,
         resume_grace: float = 120, activity: FakeActivity | None = None) -> ServiceLifecycle:
    return ServiceLifecycle(
        "svc", provider, Timing(start_timeout=start_timeout, idle_timeout=idle_timeout, max_waiting=1000,
                                poll_interval=0.1, resume_grace=resume_grace),
        clock=clock, activity=activity,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(clock: FakeClock) -> FakeProvider:
    return FakeProvider(clock, boot_seconds=2.0)


async def ready(lifecycle: ServiceLifecycle, provider: FakeProvider) -> None:
    provider.adopt_running()
    assert await lifecycle.adopt()


# -- the hold ------------------------------------------------------------------------------------------------------


async def test_a_hold_lets_requests_in_flight_finish_makes_new_ones_wait_then_stops_the_service(clock, provider):
    lifecycle = make(clock, provider)
    await ready(lifecycle, provider)
    assert lifecycle.try_acquire()  # a transcription in flight
    holding = asyncio.create_task(lifecycle.hold(ttl=300, drain=60))
    await clock.advance(1)
    assert lifecycle.held and not lifecycle.try_acquire(), "a held service admits no request"
    newcomer = asyncio.create_task(lifecycle.acquire())
    await clock.advance(5)
    assert not newcomer.done() and lifecycle.waiting == 1
    assert provider.stop_calls == 0 and not holding.done(), "stopped with a request in flight"

    lifecycle.release()  # the transcription is answered
    await clock.advance(0.2)
    outcome = holding.result()
    assert outcome.stopped and outcome.cut == 0 and outcome.waited == pytest.approx(6, abs=0.2)
    assert lifecycle.state is State.STOPPED and provider.stop_calls == 1 and not provider.running
    assert not newcomer.done(), "the stop does not let the waiting request wake the old containers"

    # make up re-creates the containers, then releases: the waiting request wakes the new ones.
    provider.start_calls = 0
    assert lifecycle.unhold("released")
    await clock.advance(2.5)
    assert newcomer.done() and newcomer.exception() is None
    assert provider.start_calls == 1 and lifecycle.state is State.READY and not lifecycle.held


async def test_the_drain_is_bounded_and_websockets_are_not_waited_for(clock, provider):
    lifecycle = make(clock, provider)
    await ready(lifecycle, provider)
    assert lifecycle.try_acquire()
    lifecycle.streams += 1  # an open live session: closed by its service when it stops
    outcome = await asyncio.wait_for(asyncio.ensure_future(lifecycle.hold(ttl=300, drain=60)), 5)
    assert outcome.stopped and outcome.cut == 1 and outcome.waited < 0.5, outcome

    lifecycle.unhold("released")
    await clock.advance(2.5)
    assert lifecycle.try_acquire()  # a second, plain request: the drain waits for it, up to `drain`
    holding = asyncio.create_task(lifecycle.hold(ttl=300, drain=30))
    await clock.advance(29)
    assert not holding.done()
    await clock.advance(1.5)
    outcome = holding.result()
    assert outcome.stopped and outcome.cut == 2 and outcome.waited == pytest.approx(30, abs=0.2)


async def test_a_service_running_before_the_hold_is_woken_again_without_a_request(clock, provider):
    lifecycle = make(clock, provider)
    await ready(lifecycle, provider)
    await lifecycle.hold(ttl=300, drain=60)
    assert not provider.running
    lifecycle.unhold("released")
    await clock.advance(2.5)
    assert lifecycle.state is State.READY and provider.running, "jobs queued in it must not wait for a request"


async def test_a_stopped_service_is_held_without_a_stop_and_stays_stopped_after(clock, provider):
    lifecycle = make(clock, provider)
    outcome = await lifecycle.hold(ttl=300, drain=60)
    assert outcome.stopped and provider.stop_calls == 0
    lifecycle.unhold("released")
    await clock.advance(5)
    assert lifecycle.state is State.STOPPED and provider.start_calls == 0


async def test_a_hold_ends_by_itself_when_make_up_never_releases_it(clock, provider):
    lifecycle = make(clock, provider, start_timeout=600)
    await ready(lifecycle, provider)
    await lifecycle.hold(ttl=100, drain=60)
    waiter = asyncio.create_task(lifecycle.acquire())
    await clock.advance(99)
    await lifecycle.check()
    assert lifecycle.held and not waiter.done()
    await clock.advance(2)
    await lifecycle.check()
    assert not lifecycle.held
    await clock.advance(2.5)
    assert waiter.done() and waiter.exception() is None and lifecycle.state is State.READY


async def test_a_request_held_longer_than_start_timeout_gets_504(clock, provider):
    lifecycle = make(clock, provider, start_timeout=30)
    await lifecycle.hold(ttl=300, drain=60)
    waiter = asyncio.create_task(lifecycle.acquire())
    await clock.advance(31)
    with pytest.raises(StartTimeout):
        waiter.result()
    assert lifecycle.waiting == 0


async def test_the_supervisor_neither_stops_nor_adopts_a_held_service(clock, provider):
    lifecycle = make(clock, provider, idle_timeout=10)
    await lifecycle.hold(ttl=300, drain=60)
    provider.adopt_running()  # compose (or someone) started the container meanwhile
    await clock.advance(50)
    await lifecycle.check()
    assert lifecycle.state is State.STOPPED and lifecycle.held, "adopted during the hold"


async def test_a_hold_during_a_start_waits_for_it_then_stops_and_the_start_s_waiter_waits_on(clock, provider):
    lifecycle = make(clock, provider)
    first = asyncio.create_task(lifecycle.acquire())
    await clock.advance(1)
    assert lifecycle.state is State.STARTING
    holding = asyncio.create_task(lifecycle.hold(ttl=300, drain=60))
    await clock.advance(1.5)
    assert holding.done() and holding.result().stopped, "stopped once the start had finished"
    assert provider.start_calls == 1 and provider.stop_calls == 1
    assert not first.done(), "a request not yet in flight is held like any new one"
    lifecycle.unhold("released")
    await clock.advance(2.5)
    assert first.done() and first.exception() is None and provider.start_calls == 2


async def test_a_second_hold_extends_the_first(clock, provider):
    lifecycle = make(clock, provider)
    await ready(lifecycle, provider)
    await lifecycle.hold(ttl=100, drain=10)
    await clock.advance(50)
    again = await lifecycle.hold(ttl=100, drain=10)
    assert again.stopped and lifecycle.holds == 1
    assert lifecycle.hold_left() == pytest.approx(100, abs=0.5)
    assert lifecycle.snapshot()["held"] is True


# -- the resume after a proxy start --------------------------------------------------------------------------------


async def test_an_interrupted_service_is_woken_at_proxy_start_and_stopped_after_the_grace_when_idle(clock, provider):
    activity = FakeActivity()
    lifecycle = make(clock, provider, resume_grace=120, idle_timeout=900, activity=activity)
    provider.was_interrupted = True  # its containers exited: a reboot
    lifecycle.plan_resume()
    await clock.advance(2.5)
    assert lifecycle.state is State.READY and provider.start_calls == 1, "woken without a request"
    assert activity.calls == 1  # asked at once what it is busy with
    for _ in range(11):
        await clock.advance(10)
        await lifecycle.check()
    assert lifecycle.state is State.READY, "stopped before the grace ran out"
    await clock.advance(11)
    await lifecycle.check()
    await settle()
    assert lifecycle.state is State.STOPPED, "kept up with nothing to do for longer than resumeGrace"


async def test_a_resumed_service_that_is_busy_stays_up_while_it_works(clock, provider):
    activity = FakeActivity()
    activity.answer = "busy: jobs_queued=3"
    lifecycle = make(clock, provider, resume_grace=120, idle_timeout=300, activity=activity)
    provider.was_interrupted = True
    lifecycle.plan_resume()
    await clock.advance(2.5)
    assert lifecycle.state is State.READY
    for _ in range(20):  # twenty minutes of jobs: each look finds it busy
        await clock.advance(60)
        await lifecycle.check()
    assert lifecycle.state is State.READY and provider.stop_calls == 0
    activity.answer = None  # the queue is empty: the ordinary idle rule (idleTimeout) stops it
    await clock.advance(301)
    await lifecycle.check()
    await settle()
    assert lifecycle.state is State.STOPPED


async def test_a_request_after_the_resume_puts_the_ordinary_idle_timeout_in_force(clock, provider):
    lifecycle = make(clock, provider, resume_grace=60, idle_timeout=300, activity=FakeActivity())
    provider.was_interrupted = True
    lifecycle.plan_resume()
    await clock.advance(2.5)
    await clock.advance(30)
    assert lifecycle.try_acquire()
    lifecycle.release()
    await clock.advance(100)
    await lifecycle.check()
    assert lifecycle.state is State.READY, "a service in use gets its idleTimeout, not the resume grace"


async def test_a_service_never_run_or_already_running_is_not_resumed(clock, provider):
    lifecycle = make(clock, provider)
    provider.was_interrupted = False  # only created (a fresh make up)
    lifecycle.plan_resume()
    await clock.advance(5)
    assert provider.start_calls == 0 and not lifecycle.resume_pending

    running = make(clock, FakeProvider(clock))
    running.provider.adopt_running()  # type: ignore[attr-defined]
    running.provider.was_interrupted = True  # type: ignore[attr-defined]
    assert await running.adopt()
    running.plan_resume()
    await clock.advance(5)
    assert running.provider.start_calls == 0  # type: ignore[attr-defined]


async def test_a_provider_that_cannot_answer_yet_is_asked_again_at_each_check(clock, provider):
    lifecycle = make(clock, provider)
    provider.was_interrupted = ProviderUnavailable("svc", "Docker Engine unreachable: still starting after a reboot")
    lifecycle.plan_resume()
    await clock.advance(2)
    assert lifecycle.resume_pending and provider.start_calls == 0
    await lifecycle.check()
    await clock.advance(2)
    assert lifecycle.resume_pending
    provider.was_interrupted = True  # dockerd answers now
    await lifecycle.check()
    await clock.advance(2.5)
    assert not lifecycle.resume_pending and lifecycle.state is State.READY


async def test_a_resume_whose_start_fails_is_tried_again_with_a_growing_delay_until_it_starts(clock, provider):
    lifecycle = make(clock, provider)
    provider.was_interrupted = True
    provider.start_error = "port is already allocated"  # dockerd still settling after the reboot
    failed_at = clock.now()
    lifecycle.plan_resume()
    await clock.advance(1)
    assert provider.start_calls == 1 and lifecycle.state is State.STOPPED and lifecycle.resume_pending
    tries_at = []
    for _ in range(80):  # 80 s of checks, one a second, with no request
        await clock.advance(1)
        calls = provider.start_calls
        await lifecycle.check()
        await settle()
        if provider.start_calls > calls:
            tries_at.append(round(clock.now() - failed_at))
    assert tries_at == [10, 30, 70], "tried again after 10 s, then 20 s, then 40 s"
    provider.start_error = None  # the port is free again
    await clock.advance(90)
    await lifecycle.check()
    await clock.advance(2.5)
    assert lifecycle.state is State.READY and not lifecycle.resume_pending and lifecycle.resumed_at is not None
    assert lifecycle.resume_failures == 0 and lifecycle.resume_retry_at is None


async def test_a_request_during_the_resume_retries_ends_them(clock, provider):
    lifecycle = make(clock, provider)
    provider.was_interrupted = True
    provider.start_error = "port is already allocated"
    lifecycle.plan_resume()
    await clock.advance(1)
    provider.start_error = None
    request = asyncio.create_task(lifecycle.acquire())
    await clock.advance(2.5)
    assert request.done() and request.exception() is None and lifecycle.state is State.READY
    lifecycle.release()
    await clock.advance(20)
    await lifecycle.check()
    await settle()
    assert provider.start_calls == 2 and not lifecycle.resume_pending, "a running service is not resumed again"


async def test_resume_grace_zero_never_resumes(clock, provider):
    lifecycle = make(clock, provider, resume_grace=0)
    provider.was_interrupted = True
    lifecycle.plan_resume()
    await lifecycle.check()
    await clock.advance(5)
    assert provider.start_calls == 0 and not lifecycle.resume_pending
