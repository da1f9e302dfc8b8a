"""Admission control and off-loop inference.

    gate = InferenceGate(max_concurrency=2, max_queue=16, retry_after=5, metrics=metrics)
    async with gate.slot():                      # ServerBusy (503 + Retry-After) at once when slots + queue are full
        result = await run_in_worker(work, cancel_on_disconnect=request)

`work` receives a `threading.Event` it should check between steps (e.g. between decoded segments): it is set when the
client disconnects, so the worker stops early and the slot is freed. A request still queued when its client goes away
is cancelled before it ever runs. `iterate_in_worker` does the same for a generator (streaming).
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

from starlette.requests import Request

from whisper_common.errors import ClientDisconnected, ServerBusy
from whisper_common.metrics import ServiceMetrics

T = TypeVar("T")


class InferenceGate:
    """At most `max_concurrency` inferences at once and `max_queue` waiting; beyond that ServerBusy immediately."""

    def __init__(
        self, max_concurrency: int, max_queue: int, retry_after: int = 5, metrics: ServiceMetrics | None = None
    ) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.retry_after = retry_after
        self.metrics = metrics
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._admitted = 0
        self._active = 0
        self.executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="inference")

    @property
    def waiting(self) -> int:
        return self._admitted - self._active

    @property
    def active(self) -> int:
        return self._active

    @asynccontextmanager
    async def slot(self, request: Request | None = None) -> AsyncIterator[None]:
        """Hold one inference slot. With `request`, a client that disconnects while queued leaves the queue at once
        (ClientDisconnected)."""
        if self._admitted >= self.max_concurrency + self.max_queue:
            if self.metrics:
                self.metrics.rejected.inc()
            raise ServerBusy(
                self.retry_after,
                f"the server is busy ({self._active} running, {self.waiting} queued); retry in {self.retry_after} s",
            )
        self._admitted += 1
        self._publish()
        try:
            await self._acquire(request)
        except BaseException:
            self._admitted -= 1
            self._publish()
            raise
        self._active += 1
        self._publish()
        try:
            yield
        finally:
            self._active -= 1
            self._admitted -= 1
            self._semaphore.release()
            self._publish()

    async def _acquire(self, request: Request | None) -> None:
        if request is None or not self._semaphore.locked():
            await self._semaphore.acquire()
            return
        acquiring = asyncio.ensure_future(self._semaphore.acquire())
        watcher = asyncio.ensure_future(wait_for_disconnect(request))
        try:
            await asyncio.wait({acquiring, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await self._abandon(acquiring, watcher)
            raise
        if acquiring.done() and not acquiring.cancelled():
            watcher.cancel()
            return
        await self._abandon(acquiring, watcher)
        raise ClientDisconnected()

    async def _abandon(self, acquiring: asyncio.Future[bool], watcher: asyncio.Future[None]) -> None:
        watcher.cancel()
        acquiring.cancel()
        try:
            await acquiring
        except asyncio.CancelledError:
            return
        self._semaphore.release()  # it was acquired just before the cancel landed

    def _publish(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(self.waiting)
            self.metrics.inference_active.set(self._active)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client disconnects. Only call after the body was read (the form is parsed)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def run_in_worker(
    gate: InferenceGate, work: Callable[[threading.Event], T], request: Request | None = None
) -> T:
    """Run `work(cancel_event)` in the gate's threads; when `request`'s client disconnects first, set the event,
    wait for the worker to notice, and raise ClientDisconnected."""
    cancel = threading.Event()
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(gate.executor, contextvars.copy_context().run, work, cancel)
    if request is None:
        return await future
    watcher = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            return future.result()
        cancel.set()
        try:
            await future
        except Exception:
            pass
        raise ClientDisconnected()
    except asyncio.CancelledError:
        cancel.set()
        raise
    finally:
        watcher.cancel()


_END = object()


async def iterate_in_worker(
    gate: InferenceGate, make_iterator: Callable[[threading.Event], Iterator[T]]
) -> AsyncIterator[T]:
    """Yield the items of a blocking iterator, each produced in the gate's threads. Closing or cancelling the async
    iterator sets the cancel event and closes the blocking one, so its worker stops at its next step."""
    cancel = threading.Event()
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()  # log lines written in the worker keep the request id
    iterator = await loop.run_in_executor(gate.executor, context.run, make_iterator, cancel)
    try:
        while True:
            item = await loop.run_in_executor(gate.executor, context.run, next, iterator, _END)
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        cancel.set()
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                await asyncio.shield(loop.run_in_executor(gate.executor, close))
            except Exception:
                pass
