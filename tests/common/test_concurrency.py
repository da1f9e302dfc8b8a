"""InferenceGate: slots, queue, immediate 503 beyond them; worker cancellation."""
from __future__ import annotations

import asyncio
import threading

import pytest

from whisper_common.concurrency import InferenceGate, iterate_in_worker, run_in_worker
from whisper_common.errors import ServerBusy


async def test_gate_admits_slots_plus_queue_then_rejects_at_once() -> None:
    gate = InferenceGate(max_concurrency=1, max_queue=1, retry_after=7)
    release = asyncio.Event()
    order: list[int] = []

    async def job(number: int) -> None:
        async with gate.slot():
            order.append(number)
            await release.wait()

    first = asyncio.create_task(job(1))
    second = asyncio.create_task(job(2))
    await asyncio.sleep(0.05)
    assert gate.active == 1 and gate.waiting == 1
    with pytest.raises(ServerBusy) as raised:
        async with gate.slot():
            pass
    assert raised.value.headers() == {"Retry-After": "7"} and raised.value.status_code == 503
    release.set()
    await asyncio.gather(first, second)
    assert order == [1, 2] and gate.active == 0 and gate.waiting == 0
    gate.shutdown()


async def test_cancelled_waiter_leaves_the_queue() -> None:
    gate = InferenceGate(max_concurrency=1, max_queue=1)
    hold = asyncio.Event()

    async def holder() -> None:
        async with gate.slot():
            await hold.wait()

    running = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert gate.waiting == 0
    hold.set()
    await running
    async with gate.slot():
        assert gate.active == 1
    gate.shutdown()


async def test_run_in_worker_runs_off_the_loop() -> None:
    gate = InferenceGate(max_concurrency=2, max_queue=0)
    loop_thread = threading.get_ident()
    assert await run_in_worker(gate, lambda cancel: threading.get_ident()) != loop_thread
    gate.shutdown()


async def test_iterate_in_worker_stops_the_producer_when_closed() -> None:
    gate = InferenceGate(max_concurrency=1, max_queue=0)
    produced: list[int] = []
    seen_cancel = threading.Event()

    def numbers(cancel: threading.Event):
        for number in range(1000):
            if cancel.is_set():
                seen_cancel.set()
                return
            produced.append(number)
            yield number

    stream = iterate_in_worker(gate, numbers)
    received = [await stream.__anext__() for _ in range(3)]
    await stream.aclose()
    assert received == [0, 1, 2] and len(produced) < 10
    gate.shutdown()
