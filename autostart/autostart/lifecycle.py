"""The wake/idle state machine of one service: stopped → starting → ready → stopping → stopped.

It decides; the provider acts. It does no I/O of its own: starting, stopping and probing go through the
provider, time through an injected clock (tests drive a fake one and never sleep), and what happened is
reported to an observer (metrics and logs live in status.py).

Guarantees:
- one start at a time per service, however many requests arrive while it runs (single flight);
- at most `max_waiting` requests wait on a start; each waits at most `start_timeout`;
- a service is stopped for idleness only when nothing is in flight, decided without yielding, so a
  request cannot slip in between the decision and the stop;
- a service stopped (or crashed) from outside is noticed by `check()` and started again by the next
  request; one started from outside (or already running at start-up) is adopted as ready;
- a start that fails or times out is stopped again (stopping → stopped), so nothing half-started keeps
  running while the status says `stopped`; a start whose service reports advancing `progress` (a model
  download) goes on past start_timeout, up to `progress_timeout`, instead of being stopped and restarted;
- a start the service itself declares failed (its readiness answer says `"status": "failed"`, e.g. the model cannot
  be loaded) fails its waiters at once with the service's reason, is stopped, and is not tried again until a
  back-off has passed (`failed_start_backoff`, doubling with each failure in a row up to MAX_BACKOFF); requests in
  between are refused at once (StartBackoff) instead of each paying a doomed start;
- before an idle stop the service is asked whether it is busy with work that is not a request (queued or
  running jobs, open realtime sessions: the injected ActivityProbe); busy postpones the stop by one more
  idle period;
- a hold (`hold`, asked by `make up` around re-creating a service's containers) admits no new request: new ones
  wait as during a wake, those in flight get `drain` seconds to finish (long-lived ones, WebSockets, are not waited
  for), then the service is stopped; `unhold` (or the hold's own expiry, checked by `check()`) lets the waiting
  requests wake it again, and wakes it anyway when it was running before the hold;
- after a fresh proxy start (`plan_resume`), a stopped service whose provider says it was interrupted (it ran and
  was stopped while no proxy looked after it: a reboot, a crash) is woken once without a request, so the work it
  had queued resumes; it stays up for `resume_grace` seconds, or for as long as the ActivityProbe says it is busy.
  A resume whose start fails (dockerd still settling after a reboot, a port taken) is tried again by `check()` after
  RESUME_RETRY_FIRST seconds, doubling up to MAX_BACKOFF, for as long as the service stays stopped and interrupted:
  the jobs it holds must not wait for a request that may not come for hours.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from .errors import (
    AutostartError,
    ServiceFailed,
    StartBackoff,
    StartFailed,
    StartTimeout,
    StopFailed,
    TooManyWaiting,
)
from .providers.base import Provider

T = TypeVar("T")
RECHECK_DELAYS = (0.05, 0.25, 1.0)
DRAIN_POLL = 0.05  # seconds between looks at the requests in flight while a hold drains them  # seconds between looks after a request saw the service drop its connection
MAX_BACKOFF = 300.0  # seconds: the longest wait between starts of a service that keeps reporting it cannot start
RESUME_RETRY_FIRST = 10.0  # seconds after a failed resume before the next try (doubling up to MAX_BACKOFF)


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class State(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


class Observer(Protocol):
    """What the state machine reports; status.py turns it into metrics and log lines."""

    def state_changed(self, service: str, old: State, new: State, reason: str) -> None: ...

    def wake_finished(self, service: str, seconds: float, error: AutostartError | None) -> None: ...

    def stopped(self, service: str, reason: str) -> None: ...

    def problem(self, service: str, message: str) -> None: ...

    def stop_postponed(self, service: str, reason: str) -> None: ...

    def hold_changed(self, service: str, held: bool, reason: str) -> None: ...

    def resumed(self, service: str, reason: str) -> None: ...


class ActivityProbe(Protocol):
    async def busy(self) -> str | None:
        """Why the service must not be stopped now (e.g. "jobs_running=1"), or None when it may be; an
        unanswerable question is None too (a service that cannot say is stopped as before)."""


class NullObserver:
    def state_changed(self, service: str, old: State, new: State, reason: str) -> None:
        pass

    def wake_finished(self, service: str, seconds: float, error: AutostartError | None) -> None:
        pass

    def stopped(self, service: str, reason: str) -> None:
        pass

    def problem(self, service: str, message: str) -> None:
        pass

    def stop_postponed(self, service: str, reason: str) -> None:
        pass

    def hold_changed(self, service: str, held: bool, reason: str) -> None:
        pass

    def resumed(self, service: str, reason: str) -> None:
        pass


@dataclass(frozen=True)
class Timing:
    start_timeout: float
    idle_timeout: float  # 0 = never stop
    max_waiting: int
    poll_interval: float
    # A start may go on past start_timeout while the service reports progress, up to this many seconds in all
    # (0 or below start_timeout: never past start_timeout). Progress must change at least every start_timeout.
    progress_timeout: float = 0
    # Seconds to wait after a start the service declared failed before the next one is tried (doubling with each
    # such failure in a row, up to MAX_BACKOFF); 0 = the next request tries at once.
    failed_start_backoff: float = 0
    # Seconds a service woken by the resume after a proxy start stays up with nothing to do (no request, not busy):
    # long enough for jobs the restart interrupted to come back to its queue (their lease must run out first).
    resume_grace: float = 0


@dataclass
class _Hold:
    until: float  # the hold ends by itself at this time (make up died)
    was_ready: bool  # the service ran when the hold began: it is woken again when the hold ends
    released: asyncio.Future[None]  # what requests waiting on the hold wait for


@dataclass(frozen=True)
class HoldOutcome:
    """What `hold` did: whether the service is stopped now, and how many requests were still in flight when it was
    stopped (WebSockets included: their service closes them)."""

    stopped: bool
    cut: int
    waited: float


def _doubling(first: float, failures: int) -> float:
    """The wait after `failures` failures in a row: `first`, doubled for each one after the first, at most
    MAX_BACKOFF."""
    return min(first * 2 ** (failures - 1), MAX_BACKOFF)


def _retrieve(task: asyncio.Future) -> None:
    # Failures reach waiters and the observer; this only keeps asyncio from warning about them.
    if not task.cancelled():
        task.exception()


class ServiceLifecycle:
    def __init__(
        self,
        name: str,
        provider: Provider,
        timing: Timing,
        *,
        clock: Clock | None = None,
        observer: Observer | None = None,
        activity: ActivityProbe | None = None,
    ) -> None:
        self.name = name
        self.provider = provider
        self.activity = activity
        self.timing = timing
        self.clock: Clock = clock or MonotonicClock()
        self.observer: Observer = observer or NullObserver()
        self.state = State.STOPPED
        self.in_flight = 0
        self.waiting = 0
        self.last_activity: float | None = None
        self.last_wake_seconds: float | None = None
        self.last_error: str | None = None
        self.wakes = 0
        self.stops = 0
        self.start_progress: object = None  # the service's last reported progress during the current start
        self.busy_seen: float | None = None  # when the activity probe last said busy (re-arms the idle timer)
        self.stop_postponed: str | None = None  # why the last idle stop was postponed
        self.stops_postponed = 0
        self.failures_in_a_row = 0  # starts the service declared failed since its last successful one
        self.backoff_until: float | None = None  # no start before this time (after a declared failure)
        self.streams = 0  # requests in flight that stay open for long (WebSockets): a hold does not wait for them
        self.holds = 0
        self.resume_pending = False  # plan_resume() was called and the provider has not answered yet
        self.resumed_at: float | None = None  # when the resume after a proxy start made the service ready
        self.resume_failures = 0  # resumes in a row whose start failed
        self.resume_retry_at: float | None = None  # the next resume is not tried before this time
        self._hold: _Hold | None = None
        self._wake_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._recheck_task: asyncio.Future[None] | None = None
        self._resume_task: asyncio.Task[None] | None = None

    def retune(self, timing: Timing, activity: ActivityProbe | None) -> None:
        """New settings from a config reload, in force from the next decision on. The state, the requests in flight
        and waiting, a start or stop under way and the back-off are kept (a waiting request keeps the deadline it
        arrived with)."""
        self.timing = timing
        self.activity = activity

    # -- requests ---------------------------------------------------------------------------------

    def try_acquire(self, *, touch: bool = True) -> bool:
        """Count a request in flight if the service is ready right now; never waits, never wakes."""
        if self.state is not State.READY or self._hold is not None:
            return False
        self.in_flight += 1
        if touch:
            self.last_activity = self.clock.now()
        return True

    async def acquire(self, *, touch: bool = True) -> None:
        """Wait until the service is ready (starting it if needed), then count the request in flight.

        Raises StartTimeout past start_timeout, StartFailed when the start fails, TooManyWaiting when
        max_waiting requests already wait.
        """
        if self.try_acquire(touch=touch):
            return
        self._refuse_during_backoff()
        if self.waiting >= self.timing.max_waiting:
            raise TooManyWaiting(self.name, self.timing.max_waiting)
        arrived = self.clock.now()
        deadline = arrived + self.timing.start_timeout
        self.waiting += 1
        try:
            while not self.try_acquire(touch=touch):
                if self._hold is not None:
                    outcome = self._hold.released
                elif self.state is State.STOPPING and self._stop_task:
                    outcome = self._stop_task
                else:
                    outcome = self.wake()
                remaining = deadline - self.clock.now()
                try:
                    finished = remaining > 0 and await self._wait(outcome, remaining)
                except StartTimeout:
                    finished = False
                if not finished:
                    raise StartTimeout(self.name, self.clock.now() - arrived, self.timing.start_timeout)
        finally:
            self.waiting -= 1

    def backoff_left(self) -> float:
        """Seconds until the next start may be tried after a declared failure (0 when it may be tried now)."""
        if self.backoff_until is None:
            return 0.0
        return max(self.backoff_until - self.clock.now(), 0.0)

    def _refuse_during_backoff(self) -> None:
        left = self.backoff_left()
        if left > 0 and self.state is State.STOPPED and self._wake_task is None:
            raise StartBackoff(self.name, self.last_error or "the last start failed", left)

    def release(self, *, touch: bool = True) -> None:
        self.in_flight -= 1
        if touch:
            self.last_activity = self.clock.now()

    def wake(self, reason: str = "request") -> asyncio.Future[None]:
        """Start the service unless it is ready or starting; return what completes when it is ready.

        Single flight: while a start runs, every caller gets that same start. During a hold, the start waits for
        the hold's end.
        """
        if self._wake_task is not None:
            return self._wake_task
        if self._hold is not None:
            after_hold = asyncio.ensure_future(self._wake_after(self._hold.released, reason))
            after_hold.add_done_callback(_retrieve)
            return after_hold
        if self.state is State.STOPPED and self.backoff_left() > 0:
            waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiting.set_exception(StartBackoff(self.name, self.last_error or "the last start failed", self.backoff_left()))
            waiting.add_done_callback(_retrieve)
            return waiting
        if self.state is State.READY:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        if self.state is State.STOPPING and self._stop_task is not None:
            after_stop = asyncio.ensure_future(self._wake_after(self._stop_task, reason))
            after_stop.add_done_callback(_retrieve)
            return after_stop
        self._wake_task = asyncio.create_task(self._start(reason), name=f"wake {self.name}")
        self._wake_task.add_done_callback(_retrieve)
        return self._wake_task

    async def _wake_after(self, before: asyncio.Future[None], reason: str) -> None:
        await asyncio.shield(before)
        await asyncio.shield(self.wake(reason))

    async def _wait(self, outcome: asyncio.Future[None], timeout: float) -> bool:
        """True when `outcome` finished within `timeout` (re-raising its error); False on timeout."""
        timer = asyncio.ensure_future(self.clock.sleep(timeout))
        try:
            await asyncio.wait({outcome, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if not outcome.done():
            return False
        outcome.result()
        return True

    # -- start and stop ---------------------------------------------------------------------------

    async def _start(self, reason: str) -> None:
        started = self.clock.now()
        deadline = started + self.timing.start_timeout
        limit = started + max(self.timing.progress_timeout, self.timing.start_timeout)
        self.wakes += 1
        self.start_progress = None
        self.busy_seen = None
        self.resumed_at = None
        self._set_state(State.STARTING, reason)
        try:
            await self._before(deadline, self.provider.start())
            while not await self._before(deadline, self.provider.is_ready()):
                progress = await self._probe_progress()
                now = self.clock.now()
                if progress is not None and progress != self.start_progress:
                    # Still getting somewhere (a model download): allow another start_timeout, up to the limit.
                    self.start_progress = progress
                    deadline = max(deadline, min(now + self.timing.start_timeout, limit))
                remaining = deadline - now
                if remaining <= 0:
                    raise StartTimeout(self.name, now - started, self.timing.start_timeout)
                await self.clock.sleep(min(self.timing.poll_interval, remaining))
        except BaseException as exc:
            error = self._as_domain_error(exc)
            self.last_error = error.message
            self.last_wake_seconds = self.clock.now() - started
            self.observer.wake_finished(self.name, self.last_wake_seconds, error)
            if isinstance(exc, asyncio.CancelledError):
                self._set_state(State.STOPPED, f"start failed: {error.message}")
                raise
            if isinstance(error, ServiceFailed) and self.timing.failed_start_backoff > 0:
                self.failures_in_a_row += 1
                delay = _doubling(self.timing.failed_start_backoff, self.failures_in_a_row)
                self.backoff_until = self.clock.now() + delay
            # Whatever the start left running (a process that never became healthy) is stopped; requests
            # arriving meanwhile wait for that stop, then start afresh.
            self._begin_stop(f"start failed: {error.message}", after_failed_start=True)
            raise error from exc
        else:
            self.last_error = None
            self.failures_in_a_row = 0
            self.backoff_until = None
            # Running again, whoever woke it: what it held resumes now, so no resume is left to try.
            self.resume_pending = False
            self.resume_failures = 0
            self.resume_retry_at = None
            self.last_wake_seconds = self.clock.now() - started
            self.last_activity = self.clock.now()
            self._set_state(State.READY, "healthy")
            self.observer.wake_finished(self.name, self.last_wake_seconds, None)
        finally:
            self.start_progress = None
            self._wake_task = None

    async def _probe_progress(self) -> object:
        try:
            return await self.provider.start_progress()
        except Exception:
            return None

    async def _before(self, deadline: float, call: Awaitable[T]) -> T:
        """Await a provider call, giving up (StartTimeout) at `deadline`."""
        task = asyncio.ensure_future(call)
        try:
            if not await self._wait(task, max(deadline - self.clock.now(), 0.0)):
                raise StartTimeout(self.name, self.timing.start_timeout, self.timing.start_timeout)
        finally:
            if not task.done():
                task.cancel()
        return task.result()

    def _as_domain_error(self, exc: BaseException) -> AutostartError:
        if isinstance(exc, AutostartError):
            return exc
        if isinstance(exc, asyncio.CancelledError):
            return StartFailed(self.name, "start cancelled (the proxy is shutting down)")
        return StartFailed(self.name, f"{type(exc).__name__}: {exc}")

    def _begin_stop(self, reason: str, *, after_failed_start: bool = False) -> asyncio.Task[None]:
        self._set_state(State.STOPPING, reason)
        self._stop_task = asyncio.create_task(self._stop(reason, after_failed_start), name=f"stop {self.name}")
        self._stop_task.add_done_callback(_retrieve)
        return self._stop_task

    async def _stop(self, reason: str, after_failed_start: bool = False) -> None:
        label = "failed start" if after_failed_start else reason
        try:
            await self.provider.stop()
        except Exception as exc:
            message = exc.message if isinstance(exc, StopFailed) else f"{type(exc).__name__}: {exc}"
            problem = f"stop failed: {message}"
            self.last_error = f"{self.last_error}; {problem}" if after_failed_start and self.last_error else problem
            self.observer.problem(self.name, problem)
            running = await self._probe(self.provider.is_running())
            # Still running: keep serving it, and try again after another idle period. A start that failed
            # is not served: it is adopted by check() if it ever becomes healthy.
            self.last_activity = self.clock.now()
            ready = running is not False and not after_failed_start
            self._set_state(State.READY if ready else State.STOPPED, "stop failed")
        else:
            self.stops += 1
            self._set_state(State.STOPPED, reason)
            self.observer.stopped(self.name, label)
        finally:
            self._stop_task = None

    # -- holds (an upgrade re-creates the service) -------------------------------------------------------

    @property
    def held(self) -> bool:
        return self._hold is not None

    def hold_left(self) -> float:
        """Seconds until the hold ends by itself (0 when there is none)."""
        return 0.0 if self._hold is None else max(self._hold.until - self.clock.now(), 0.0)

    async def hold(self, ttl: float, drain: float) -> HoldOutcome:
        """Hold the service for `ttl` seconds and stop it: from now on no request is admitted (new ones wait as
        during a wake, each for at most start_timeout from its arrival), a start under way finishes first, the
        requests in flight get up to `drain` seconds to finish (WebSockets are not waited for: their service closes
        them when it stops), then the provider stops the service. Returns once it is stopped (or the stop failed).
        A second hold while one is in force extends it and waits for the same stop."""
        began = self.clock.now()
        if self._hold is None:
            was_ready = self.state in (State.READY, State.STARTING)
            released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._hold = _Hold(began + ttl, was_ready, released)
            self.holds += 1
            self.observer.hold_changed(self.name, True, f"held for at most {ttl:g}s")
        else:
            self._hold.until = max(self._hold.until, began + ttl)
        hold = self._hold
        if self._wake_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._wake_task)
        deadline = self.clock.now() + drain
        while self._hold is hold and self.in_flight > self.streams and self.clock.now() < deadline:
            await self.clock.sleep(min(DRAIN_POLL, deadline - self.clock.now()))
        cut = self.in_flight
        if self._hold is hold:
            if self.state is State.READY:
                await asyncio.shield(self._begin_stop("held"))
            elif self.state is State.STOPPING and self._stop_task is not None:
                await asyncio.shield(self._stop_task)
        return HoldOutcome(stopped=self._hold is hold and self.state is State.STOPPED, cut=cut,
                           waited=self.clock.now() - began)

    def unhold(self, reason: str) -> bool:
        """End the hold: the requests waiting on it wake the service (as they would a stopped one), which is woken
        anyway when it ran before the hold. False when there was no hold."""
        hold, self._hold = self._hold, None
        if hold is None:
            return False
        hold.released.set_result(None)
        self.observer.hold_changed(self.name, False, reason)
        if hold.was_ready and self.state is State.STOPPED:
            self.wake(f"running before the hold ({reason})")
        return True

    # -- resuming after a proxy start ---------------------------------------------------------------------

    def plan_resume(self) -> None:
        """Called once on a fresh proxy start (not a hand-over from a running proxy), after `adopt`: asks the
        provider whether the service was interrupted and, if so, wakes it (`_resume`); a provider that cannot answer
        yet is asked again at each `check()` until it can."""
        if self.timing.resume_grace > 0 and self.state is State.STOPPED:
            self.resume_pending = True
            self._start_resume()

    def _start_resume(self) -> None:
        if self.resume_retry_at is not None and self.clock.now() < self.resume_retry_at:
            return
        if self.resume_pending and (self._resume_task is None or self._resume_task.done()):
            self._resume_task = asyncio.create_task(self._resume(), name=f"resume {self.name}")
            self._resume_task.add_done_callback(_retrieve)

    async def _resume(self) -> None:
        if self.state is not State.STOPPED or self._hold is not None:
            self.resume_pending = False  # running already (adopted, or woken by a request): nothing to resume
            return
        try:
            interrupted = await self.provider.interrupted()
        except Exception as exc:
            # The provider cannot say yet (dockerd still starting after a reboot): asked again at the next check.
            self.observer.problem(self.name, f"resume: {type(exc).__name__}: {exc}")
            return
        if not self.resume_pending:
            return
        self.resume_pending = False
        if not interrupted or self.state is not State.STOPPED:
            return
        try:
            await asyncio.shield(self.wake("resume: it was interrupted while no proxy ran"))
        except AutostartError as exc:
            # The observer has reported the failed start; a request may wake it sooner than the next try.
            self.resume_failures += 1
            delay = _doubling(RESUME_RETRY_FIRST, self.resume_failures)
            self.resume_retry_at = self.clock.now() + delay
            self.resume_pending = True
            self.observer.problem(self.name, f"resume failed ({exc.message}); tried again in {delay:g}s")
            return
        if self.state is not State.READY:
            return
        self.resumed_at = self.clock.now()
        busy = await self._busy()
        if busy is not None:
            self.busy_seen = self.clock.now()
        self.observer.resumed(self.name, busy or f"not busy yet: stopped after {self.timing.resume_grace:g}s "
                                                "unless a request comes or it reports work")

    # -- supervision --------------------------------------------------------------------------------

    async def check(self) -> None:
        """Run periodically: stop an idle service, notice one stopped or started from outside, end a hold that ran
        out, resume one interrupted while no proxy ran."""
        if self._hold is not None:
            if self.clock.now() >= self._hold.until:
                self.unhold("hold expired")
            return
        if self.state is State.READY:
            if self._idle_due():
                reason = await self._busy()
                if reason is not None:
                    self.busy_seen = self.clock.now()
                    self.stop_postponed = reason
                    self.stops_postponed += 1
                    self.observer.stop_postponed(self.name, reason)
                    return
                # Decided again without yielding after the probe: a request may have come in meanwhile.
                if self.state is State.READY and self._idle_due():
                    self._begin_stop("idle")  # runs on its own; requests arriving meanwhile wait for it
                    return
            await self.verify_running()
        elif self.state is State.STOPPED:
            if not await self.adopt():
                self._start_resume()

    def _idle_due(self) -> bool:
        if self.in_flight or self.timing.idle_timeout <= 0:
            return False
        marks = [t for t in (self.last_activity, self.busy_seen) if t is not None]
        if not marks:
            return False
        latest = max(marks)
        limit = self.timing.idle_timeout
        if self.resumed_at is not None and latest <= self.resumed_at:
            limit = min(limit, self.timing.resume_grace)  # woken by the resume, and nothing has happened since
        return self.clock.now() - latest >= limit

    async def _busy(self) -> str | None:
        if self.activity is None:
            return None
        try:
            return await self.activity.busy()
        except Exception as exc:
            self.observer.problem(self.name, f"activity probe failed: {type(exc).__name__}: {exc}")
            return None

    async def verify_running(self) -> bool:
        """Ask the provider whether a ready service still runs; mark it stopped if not. False = it stopped."""
        running = await self._probe(self.provider.is_running())
        if running is False and self.state is State.READY:
            self.stops += 1
            self._set_state(State.STOPPED, "stopped from outside")
            self.observer.stopped(self.name, "outside")
            return False
        return self.state is State.READY

    def upstream_failed(self) -> None:
        """A request saw the service drop its connection: look again soon whether it still runs (a crash or a
        kill), so the status says so before the next periodic check. The provider may need a moment to see a
        killed process as gone, hence a few looks."""
        if self.state is State.READY and (self._recheck_task is None or self._recheck_task.done()):
            self._recheck_task = asyncio.ensure_future(self._recheck())
            self._recheck_task.add_done_callback(_retrieve)

    async def _recheck(self) -> None:
        for delay in RECHECK_DELAYS:
            await self.clock.sleep(delay)
            if self.state is not State.READY or not await self.verify_running():
                return

    async def adopt(self) -> bool:
        """A stopped service that is in fact running and healthy (already up at start-up, started by hand,
        or late after a timed-out start) becomes ready; its idle clock starts now."""
        if self.state is not State.STOPPED or not await self._probe(self.provider.is_running()):
            return False
        if self.state is State.STOPPED and await self._probe(self.provider.is_ready()):
            if self.state is State.STOPPED:
                self.last_activity = self.clock.now()
                self._set_state(State.READY, "adopted: already running")
                return True
        return False

    async def _probe(self, call: Awaitable[bool]) -> bool | None:
        """A provider query whose failure means 'unknown' (None), never an exception."""
        try:
            return await call
        except Exception as exc:
            self.observer.problem(self.name, f"{type(exc).__name__}: {exc}")
            return None

    async def close(self) -> None:
        for task in (self._wake_task, self._stop_task, self._recheck_task, self._resume_task):
            if task is not None:
                task.cancel()

    # -- reporting ----------------------------------------------------------------------------------

    def _set_state(self, new: State, reason: str) -> None:
        old, self.state = self.state, new
        if old is not new:
            self.observer.state_changed(self.name, old, new, reason)

    def snapshot(self) -> dict[str, object]:
        now = self.clock.now()
        idle_for = None if self.last_activity is None else round(now - self.last_activity, 3)
        return {
            "state": self.state.value,
            "inFlight": self.in_flight,
            "waiting": self.waiting,
            "lastWakeSeconds": None if self.last_wake_seconds is None else round(self.last_wake_seconds, 3),
            "lastRequestSecondsAgo": idle_for,
            "lastRequestAt": None if idle_for is None else round(time.time() - idle_for, 3),
            "idleTimeout": self.timing.idle_timeout,
            "wakes": self.wakes,
            "stops": self.stops,
            "lastError": self.last_error,
            "startProgress": self.start_progress,
            "stopsPostponed": self.stops_postponed,
            "stopPostponed": self.stop_postponed,
            "failedStartsInARow": self.failures_in_a_row,
            "nextStartInSeconds": round(self.backoff_left(), 3),
            "held": self._hold is not None,
            "holdLeftSeconds": round(self.hold_left(), 3),
            "holds": self.holds,
            "resumePending": self.resume_pending,
            "resumeRetryInSeconds": round(max(self.resume_retry_at - self.clock.now(), 0.0), 3)
            if self.resume_pending and self.resume_retry_at is not None else None,
        }
