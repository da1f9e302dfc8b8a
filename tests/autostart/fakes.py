"""A fake clock and a fake provider for the state-machine tests: time moves only when a test says so."""
from __future__ import annotations

import asyncio
import heapq
import itertools

from autostart.errors import ServiceFailed, StartFailed


class FakeClock:
    def __init__(self) -> None:
        self.time = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.time + max(seconds, 0.0), next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own deadline, letting tasks run in between."""
        target = self.time + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self.time = max(self.time, deadline)
            if not future.done():
                future.set_result(None)
            await settle()
        self.time = target
        await settle()


async def settle(rounds: int = 30) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


class FakeProvider:
    """Boots in `boot_seconds` of fake time; can be told to fail, to die, or to block its stop."""

    def __init__(self, clock: FakeClock, boot_seconds: float = 2.0) -> None:
        self.clock = clock
        self.boot_seconds = boot_seconds
        self.running = False
        self.started_at: float | None = None
        self.start_calls = 0
        self.stop_calls = 0
        self.start_error: str | None = None
        self.dies_while_starting = False
        self.stop_gate: asyncio.Event | None = None
        self.progress: object = None  # what the service reports while it starts (None: nothing)
        self.declares_failure: str | None = None  # the service answers `"status": "failed"` with this reason
        self.was_interrupted: bool | Exception = False  # what interrupted() answers (an exception: raised)

    async def start(self) -> None:
        self.start_calls += 1
        if self.start_error:
            raise StartFailed("fake", self.start_error)
        if not self.running:
            self.running = True
            self.started_at = self.clock.now()

    async def stop(self) -> None:
        self.stop_calls += 1
        if self.stop_gate is not None:
            await self.stop_gate.wait()
        self.running = False

    async def is_running(self) -> bool:
        return self.running

    async def is_ready(self) -> bool:
        if self.dies_while_starting:
            self.running = False
            raise StartFailed("fake", "process exited with code 3 before it became healthy")
        if self.declares_failure and self.running and self.started_at is not None:
            raise ServiceFailed("fake", self.declares_failure)
        return self.running and self.started_at is not None and self.clock.now() >= self.started_at + self.boot_seconds

    async def start_progress(self) -> object:
        return self.progress

    async def interrupted(self) -> bool:
        if isinstance(self.was_interrupted, Exception):
            raise self.was_interrupted
        return self.was_interrupted

    async def close(self) -> None:
        pass

    def adopt_running(self) -> None:
        self.running = True
        self.started_at = self.clock.now() - self.boot_seconds


class FakeActivity:
    """The service's answer to "are you busy?": `answer` (a reason, or None), after `gate` when one is set."""

    def __init__(self) -> None:
        self.answer: str | None = None
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.calls = 0

    async def busy(self) -> str | None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.answer
