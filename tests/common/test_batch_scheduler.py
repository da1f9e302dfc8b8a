"""The batch scheduler's logic (whisper_common.batching.scheduler): which ops share a batch, in which order batches run,
how long a batch waits to fill, cancellation and failure isolation.

The runner here is a fake that records the batches it is given: it stands in for the model only to test the scheduling
logic, which knows nothing of what an op computes. The real CTranslate2 runner is tested through real servers
(tests/whisper_faster/test_batching.py, tests/whisperx_api/test_batching.py)."""
from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from whisper_common.batching import BatchScheduler, Cancelled, Priority, SchedulerClosed


class FakeRunner:
    """For scheduling logic only: records (key, payloads) per batch, answers each payload with ("done", payload);
    a payload "boom" raises inside the batch call; `hold` blocks the batch call until released."""

    def __init__(self) -> None:
        self.batches: list[tuple[Hashable, list[Any]]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def __call__(self, key: Hashable, payloads: list[Any]) -> list[Any]:
        self.batches.append((key, list(payloads)))
        self.entered.set()
        self.hold.wait(10)
        if "boom" in payloads:
            raise ValueError("bad input")
        return [ValueError("own error") if payload == "own" else ("done", payload) for payload in payloads]


@pytest.fixture()
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture()
def scheduler(runner: FakeRunner) -> Iterator[BatchScheduler]:
    scheduler = BatchScheduler(runner, batch_size=4, max_wait=0.3)
    yield scheduler
    scheduler.close()


def block_worker(scheduler: BatchScheduler, runner: FakeRunner) -> Future[Any]:
    """Occupy the worker with a batch that runs until runner.hold is set."""
    runner.hold.clear()
    runner.entered.clear()
    blocker = scheduler.stream(Priority.LIVE, "blocker")
    future = blocker.submit("block", "blocker")
    assert runner.entered.wait(5)
    blocker.close()  # closing does not stop a running batch
    return future


def payload_order(runner: FakeRunner) -> list[list[Any]]:
    return [payloads for key, payloads in runner.batches if key != "block"]


def test_same_key_ops_of_different_streams_share_a_batch_and_keep_their_results(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    block_worker(scheduler, runner)
    streams = [scheduler.stream(Priority.SYNC, f"r{index}") for index in range(3)]
    futures = [stream.submit("encode", f"p{index}") for index, stream in enumerate(streams)]
    other = streams[0].submit("generate", "g0")
    runner.hold.set()
    assert [future.result(5) for future in futures] == [("done", "p0"), ("done", "p1"), ("done", "p2")]
    assert other.result(5) == ("done", "g0")
    assert payload_order(runner) == [["p0", "p1", "p2"], ["g0"]]
    for stream in streams:
        stream.close()
    assert scheduler.queued == 0 and scheduler.open_streams == 0


def test_batches_hold_at_most_batch_size_rows(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    block_worker(scheduler, runner)
    with scheduler.opened(Priority.SYNC) as first, scheduler.opened(Priority.SYNC) as second:
        futures = [first.submit("encode", "a", rows=3), second.submit("encode", "b", rows=2), second.submit("encode", "c", rows=1)]
        runner.hold.set()
        for future in futures:
            future.result(5)
    # least attained first: "a" (3 rows) then "b" (2 rows) would be 5; "b" waits for the next batch with "c"
    assert payload_order(runner) == [["a"], ["b", "c"]]
    assert scheduler.stats.largest <= 4


def test_priorities_live_then_synchronous_then_jobs(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    block_worker(scheduler, runner)
    with scheduler.opened(Priority.JOB) as job, scheduler.opened(Priority.SYNC) as sync, scheduler.opened(Priority.LIVE) as live:
        futures = [job.submit("encode", "job"), sync.submit("encode", "sync"), live.submit("encode", "live")]
        runner.hold.set()
        for future in futures:
            future.result(5)
    # one class per batch: a job never makes a live decode's batch bigger
    assert payload_order(runner) == [["live"], ["sync"], ["job"]]


def test_least_attained_service_lets_a_short_request_overtake_a_long_one(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    scheduler.batch_size = 1
    with scheduler.opened(Priority.SYNC, "long") as long:
        for index in range(3):
            long.run("encode", f"long{index}")
        block_worker(scheduler, runner)
        pending = [long.submit("encode", "long3"), long.submit("encode", "long4")]
        with scheduler.opened(Priority.SYNC, "short") as short:
            mine = short.submit("encode", "short0")
            runner.hold.set()
            mine.result(5)
            for future in pending:
                future.result(5)
    assert payload_order(runner)[3:] == [["short0"], ["long3"], ["long4"]]


def test_long_streams_of_one_class_take_turns(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    scheduler.batch_size = 1
    block_worker(scheduler, runner)
    with scheduler.opened(Priority.JOB) as first, scheduler.opened(Priority.JOB) as second:
        futures = [first.submit("encode", f"a{index}") for index in range(3)] + [second.submit("encode", f"b{index}") for index in range(3)]
        runner.hold.set()
        for future in futures:
            future.result(5)
    assert [payloads[0] for payloads in payload_order(runner)] == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_a_lone_request_does_not_wait_for_a_batch_to_fill(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    with scheduler.opened(Priority.SYNC) as alone:
        started = time.monotonic()
        alone.run("encode", "x")
        assert time.monotonic() - started < 0.1  # max_wait is 0.3


def test_a_batch_waits_for_another_stream_up_to_max_wait(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    with scheduler.opened(Priority.SYNC) as first, scheduler.opened(Priority.SYNC) as second:
        started = time.monotonic()
        future = first.submit("encode", "a")
        time.sleep(0.05)
        second.run("encode", "b")
        future.result(5)
        assert payload_order(runner) == [["a", "b"]]
        # the second stream now idles: the first's next op waits for it no longer than max_wait
        started = time.monotonic()
        first.run("encode", "c")
        waited = time.monotonic() - started
    assert 0.2 < waited < 1.0


def test_lower_class_holds_back_briefly_while_a_higher_class_prepares_its_next_op(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    scheduler.batch_size = 1
    with scheduler.opened(Priority.LIVE) as live, scheduler.opened(Priority.JOB) as job:
        live.run("encode", "live0")  # the live stream is now preparing its next op
        job_future = job.submit("encode", "job0")
        time.sleep(0.05)
        live.run("encode", "live1")
        job_future.result(5)
    assert payload_order(runner) == [["live0"], ["live1"], ["job0"]]


def test_cancelling_a_stream_fails_its_queued_ops_and_leaves_the_others(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    block_worker(scheduler, runner)
    gone = scheduler.stream(Priority.SYNC, "gone")
    stays = scheduler.stream(Priority.SYNC, "stays")
    lost = [gone.submit("encode", "g0"), gone.submit("generate", "g1")]
    kept = stays.submit("encode", "s0")
    gone.cancel()
    for future in lost:
        with pytest.raises(Cancelled):
            future.result(1)
    with pytest.raises(Cancelled):
        gone.run("encode", "after")
    runner.hold.set()
    assert kept.result(5) == ("done", "s0")
    gone.close()
    stays.close()
    assert scheduler.queued == 0 and scheduler.open_streams == 0
    assert all("g0" not in payloads and "g1" not in payloads for payloads in payload_order(runner))


def test_a_member_that_raises_fails_alone(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    block_worker(scheduler, runner)
    streams = [scheduler.stream(Priority.SYNC) for _ in range(3)]
    futures = [stream.submit("encode", payload) for stream, payload in zip(streams, ["a", "boom", "c"])]
    runner.hold.set()
    assert futures[0].result(5) == ("done", "a") and futures[2].result(5) == ("done", "c")
    with pytest.raises(ValueError, match="bad input"):
        futures[1].result(5)
    for stream in streams:
        stream.close()
    assert payload_order(runner) == [["a", "boom", "c"], ["a"], ["boom"], ["c"]]  # the failed batch, then each op alone
    assert scheduler.queued == 0


def test_a_result_that_is_an_exception_fails_only_its_op(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    block_worker(scheduler, runner)
    with scheduler.opened(Priority.SYNC) as first, scheduler.opened(Priority.SYNC) as second:
        mine, theirs = first.submit("encode", "own"), second.submit("encode", "fine")
        runner.hold.set()
        with pytest.raises(ValueError, match="own error"):
            mine.result(5)
        assert theirs.result(5) == ("done", "fine")
    assert payload_order(runner) == [["own", "fine"]]


def test_calls_run_alone_in_their_turn(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    block_worker(scheduler, runner)
    with scheduler.opened(Priority.JOB) as job, scheduler.opened(Priority.LIVE) as live:
        queued = job.submit("encode", "job")
        order: list[str] = []
        thread = threading.Thread(target=lambda: order.append(live.call(lambda: "live call")))
        thread.start()
        time.sleep(0.05)
        runner.hold.set()
        thread.join(5)
        queued.result(5)
    assert order == ["live call"]
    assert payload_order(runner) == [["job"]]


def test_close_fails_queued_ops(runner: FakeRunner) -> None:
    scheduler = BatchScheduler(runner, batch_size=2, max_wait=0.01)
    block_worker(scheduler, runner)
    stream = scheduler.stream(Priority.SYNC)
    future = stream.submit("encode", "late")
    threading.Timer(0.2, runner.hold.set).start()
    scheduler.close()
    with pytest.raises(SchedulerClosed):
        future.result(5)
    with pytest.raises(SchedulerClosed):
        scheduler.stream(Priority.SYNC)


def test_a_long_streams_ops_stay_out_of_a_newer_streams_batch_and_run_in_small_batches(runner: FakeRunner) -> None:
    scheduler = BatchScheduler(runner, batch_size=4, max_wait=0.05, long_after_rows=3, long_batch_size=2)
    try:
        with scheduler.opened(Priority.SYNC, "long") as long:
            for index in range(3):
                long.run("encode", f"long{index}")
            assert long.long
            block_worker(scheduler, runner)
            pending = [long.submit("encode", f"long{index}") for index in range(3, 7)]
            with scheduler.opened(Priority.SYNC, "short") as short:
                assert not short.long
                mine = short.submit("encode", "short0")
                runner.hold.set()
                mine.result(5)
            for future in pending:
                future.result(5)
    finally:
        scheduler.close()
    # the short request's batch would have taken three of the long file's windows before (batch_size 4)
    assert payload_order(runner)[3:] == [["short0"], ["long3", "long4"], ["long5", "long6"]]


def test_a_long_streams_full_batch_waits_while_a_newer_stream_prepares_its_next_op(runner: FakeRunner) -> None:
    scheduler = BatchScheduler(runner, batch_size=4, max_wait=0.5, long_after_rows=2, long_batch_size=2)
    try:
        with scheduler.opened(Priority.SYNC, "long") as long, scheduler.opened(Priority.SYNC, "short") as short:
            long.run("encode", "long0")
            long.run("encode", "long1")
            short.run("encode", "short0")  # the short request now prepares its next op (its decode, say)
            full = [long.submit("encode", "long2"), long.submit("encode", "long3")]  # a full batch of a long stream
            time.sleep(0.1)
            short.run("encode", "short1")
            for future in full:
                future.result(5)
    finally:
        scheduler.close()
    assert payload_order(runner) == [["long0"], ["long1"], ["short0"], ["short1"], ["long2", "long3"]]


def test_ops_submitted_together_run_as_one_batch_on_an_idle_worker(scheduler: BatchScheduler, runner: FakeRunner) -> None:
    with scheduler.opened(Priority.SYNC, "group") as stream:
        futures = stream.submit_all("encode", ["w0", "w1", "w2"])
        assert [future.result(5) for future in futures] == [("done", "w0"), ("done", "w1"), ("done", "w2")]
        gone = scheduler.stream(Priority.SYNC, "gone")
        gone.cancel()
        assert all(isinstance(future.exception(1), Cancelled) for future in gone.submit_all("encode", ["x", "y"]))
        gone.close()
    assert payload_order(runner) == [["w0", "w1", "w2"]]
    assert scheduler.queued == 0
