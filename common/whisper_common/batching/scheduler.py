"""The batch scheduler: inference calls ("ops") from many requests, merged into batches by key, in priority order.

    scheduler = BatchScheduler(runner, batch_size=8, max_wait=0.02)     # runner(key, [payload, ...]) -> [result, ...]
    with scheduler.stream(Priority.SYNC, label="request 42") as stream:   # one per request (or live decode)
        result = stream.run(key, payload, rows=1)                        # blocks this thread until its batch ran
        future = stream.submit(key, payload)                             # or not

It knows nothing of HTTP or of models: an op is a key (ops with equal keys can run as one batch), a payload and a
number of rows (how much of the batch it fills); the runner merges the payloads of one batch into one call and splits
the results. Which op runs next:

- **Priority** first (`Priority.LIVE` < `SYNC` < `JOB`); a batch holds ops of one priority class, so a lower class never
  slows a higher one down by making its batch bigger (on a CPU a batch of two costs ~1.5x a batch of one).
- Within a class, **least attained service**: the stream that has had the fewest rows run so far goes first, so a short
  request overtakes a long file's next window and long files interleave with each other (none is starved).
- **Long streams give way**: a stream that has had `long_after_rows` rows is long. A batch holds either long streams'
  ops or newer streams' ops, never both (a newer request's batch is not made bigger by a long file's windows), a long
  streams' batch holds at most `long_batch_size` rows (so a request that arrives while one runs waits for little), and
  it waits while a newer stream of its class, or of a higher one, prepares its next op (below). On 2 CPU cores
  (tiny.en, `python -m bench.bench_batching --parts long`), a 30 s request beside a 60-minute file took 2.63x
  (whisper-faster) and 11.0x (whisperx) its idle latency before this rule, with batches of up to 8 of the file's rows;
  1.2x and 1.4-1.7x with it (docs/benchmarks.md, batching section).
- **Waiting to fill**: a batch smaller than `batch_size` waits for another open stream of the same class that has just
  been given a result (nothing queued or running for less than `max_wait`: it is preparing its next op, typically a
  decode after its encode), at most until `max_wait` after that; a higher class's such stream holds back a lower
  class's batch the same way, and a newer stream holds back a long streams' batch of its class. A lone request never
  waits; neither does a full batch of newer streams.

A batch whose runner raises is re-run op by op, so only the op that fails gets the error. `Stream.cancel()` fails the
stream's queued ops with `Cancelled` at once (ops already in a running batch finish; their results are dropped).
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

logger = logging.getLogger("whisper_common.batching")
T = TypeVar("T")

Runner = Callable[[Hashable, list[Any]], list[Any]]
"""`runner(key, payloads)`: one result per payload, in order; a result that is an exception fails that op only."""


class Priority(IntEnum):
    """Who goes first: live sessions, then synchronous requests (plain and streamed), then jobs."""

    LIVE = 0
    SYNC = 1
    JOB = 2


class Cancelled(Exception):
    """The op's stream was cancelled (its client went away, its job was canceled) before the op ran."""


class SchedulerClosed(Exception):
    """The scheduler was shut down (the model was unloaded or the service is stopping)."""


@dataclass(frozen=True)
class _Call:
    """The key of an op that runs alone: its payload is a callable."""

    serial: int


@dataclass(eq=False)
class _Op:
    stream: Stream
    key: Hashable
    rows: int
    payload: Any
    future: Future[Any]
    serial: int
    queued_at: float


class SchedulerMetrics:
    """The scheduler's Prometheus metrics, on a service's registry (`<namespace>_batch_*`)."""

    def __init__(self, namespace: str, registry: CollectorRegistry) -> None:
        self.queued = Gauge(
            "batch_queued_ops", "Inference calls waiting for a batch.", ["priority"], namespace=namespace,
            registry=registry,
        )
        self.streams = Gauge(
            "batch_open_streams", "Requests and live decodes currently feeding the batch scheduler.",
            namespace=namespace, registry=registry,
        )
        self.batch_rows = Histogram(
            "batch_rows", "Rows (windows) per batch run.", ["op"], namespace=namespace, registry=registry,
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
        )
        self.wait_seconds = Histogram(
            "batch_wait_seconds", "Time from queueing an op to its batch starting.", ["priority"],
            namespace=namespace, registry=registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.failures = Counter(
            "batch_failures", "Batches whose call raised (each op is then run alone).", namespace=namespace,
            registry=registry,
        )
        for priority in Priority:
            self.queued.labels(priority=priority.name.lower())
            self.wait_seconds.labels(priority=priority.name.lower())

    def prime(self, ops: tuple[str, ...]) -> None:
        """Show these op names in the metrics before their first batch."""
        for op in (*ops, "call"):
            self.batch_rows.labels(op=op)


@dataclass
class SchedulerStats:
    """Counters for tests and benchmarks (the metrics hold the same for operators)."""

    batches: int = 0
    rows: int = 0
    largest: int = 0
    by_op: dict[str, list[int]] = field(default_factory=dict)  # op name -> [batches, rows]

    def record(self, op: str, rows: int) -> None:
        self.batches += 1
        self.rows += rows
        self.largest = max(self.largest, rows)
        counts = self.by_op.setdefault(op, [0, 0])
        counts[0] += 1
        counts[1] += rows


class Stream:
    """One request's (or one live decode's) share of the scheduler. Use from one or more threads of that request."""

    def __init__(self, scheduler: BatchScheduler, priority: Priority, serial: int, label: str) -> None:
        self.scheduler = scheduler
        self.priority = priority
        self.serial = serial
        self.label = label
        self.attained = 0  # rows run so far
        self.queued = 0
        self.running = 0
        self.cancelled = False
        self.closed = False
        self.idle_since = scheduler.clock()  # when it last had nothing queued or running

    @property
    def long(self) -> bool:
        """It has had `long_after_rows` rows run: it gives way to newer streams (see the module docstring)."""
        return self.attained >= self.scheduler.long_after_rows

    def submit(self, key: Hashable, payload: Any, rows: int = 1) -> Future[Any]:
        """Queue an op; its future gets the runner's result (or exception)."""
        return self.scheduler._submit(self, key, payload, rows)

    def submit_all(self, key: Hashable, payloads: list[Any]) -> list[Future[Any]]:
        """Queue one op of one row per payload, all at once, so that no batch starts between two of them (queued one
        by one, an idle worker would start a batch with the first alone)."""
        return self.scheduler._submit_all(self, key, payloads)

    def run(self, key: Hashable, payload: Any, rows: int = 1) -> Any:
        """Queue an op and wait for its result (raises Cancelled when the stream is cancelled first)."""
        return self.submit(key, payload, rows).result()

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` alone on a scheduler thread, in this stream's turn (work that cannot be batched)."""
        return self.run(_Call(next(self.scheduler._serials)), function)  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Fail the queued ops with Cancelled now, and any op submitted later."""
        self.scheduler._cancel(self)

    def close(self) -> None:
        self.scheduler._close(self)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BatchScheduler:
    """Runs ops from streams in batches on `workers` threads (one per model replica)."""

    def __init__(
        self,
        runner: Runner,
        *,
        batch_size: int = 8,
        max_wait: float = 0.02,
        long_after_rows: int = 16,
        long_batch_size: int = 2,
        workers: int = 1,
        name: str = "batch",
        metrics: SchedulerMetrics | None = None,
        op_name: Callable[[Hashable], str] = lambda key: type(key).__name__,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.long_after_rows = long_after_rows
        self.long_batch_size = long_batch_size
        self.metrics = metrics
        self.op_name = op_name
        self.clock = clock
        self.stats = SchedulerStats()
        self._condition = threading.Condition()
        self._queue: list[_Op] = []
        self._streams: dict[int, Stream] = {}
        self._serials = itertools.count()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True) for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- what requests use ------------------------------------------------------------------------------------------

    def stream(self, priority: Priority, label: str = "") -> Stream:
        with self._condition:
            if self._closed:
                raise SchedulerClosed()
            stream = Stream(self, priority, next(self._serials), label)
            self._streams[stream.serial] = stream
            self._publish()
            return stream

    @contextmanager
    def opened(self, priority: Priority, label: str = "") -> Iterator[Stream]:
        stream = self.stream(priority, label)
        try:
            yield stream
        finally:
            stream.close()

    @property
    def queued(self) -> int:
        """Ops waiting for a batch."""
        with self._condition:
            return len(self._queue)

    @property
    def open_streams(self) -> int:
        with self._condition:
            return len(self._streams)

    def close(self, wait: float = 5.0) -> None:
        """Fail every queued op (SchedulerClosed) and stop the threads after their running batch."""
        with self._condition:
            self._closed = True
            dropped, self._queue = self._queue, []
            for op in dropped:
                op.stream.queued -= 1
            self._condition.notify_all()
        for op in dropped:
            op.future.set_exception(SchedulerClosed())
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(wait)

    # -- streams ----------------------------------------------------------------------------------------------------

    def _submit(self, stream: Stream, key: Hashable, payload: Any, rows: int) -> Future[Any]:
        return self._enqueue(stream, key, [(payload, rows)])[0]

    def _submit_all(self, stream: Stream, key: Hashable, payloads: list[Any]) -> list[Future[Any]]:
        return self._enqueue(stream, key, [(payload, 1) for payload in payloads])

    def _enqueue(self, stream: Stream, key: Hashable, items: list[tuple[Any, int]]) -> list[Future[Any]]:
        futures: list[Future[Any]] = [Future() for _ in items]
        with self._condition:
            refusal = Cancelled() if stream.cancelled or stream.closed else SchedulerClosed() if self._closed else None
            if refusal is not None:
                for future in futures:
                    future.set_exception(refusal)
                return futures
            queued_at = self.clock()
            for (payload, rows), future in zip(items, futures):
                self._queue.append(_Op(stream, key, max(1, rows), payload, future, next(self._serials), queued_at))
            stream.queued += len(items)
            self._publish()
            self._condition.notify_all()
        return futures

    def _cancel(self, stream: Stream) -> None:
        with self._condition:
            stream.cancelled = True
            dropped = [op for op in self._queue if op.stream is stream]
            self._queue = [op for op in self._queue if op.stream is not stream]
            stream.queued = 0
            self._publish()
            self._condition.notify_all()
        for op in dropped:
            op.future.set_exception(Cancelled())

    def _close(self, stream: Stream) -> None:
        self._cancel(stream)
        with self._condition:
            stream.closed = True
            self._streams.pop(stream.serial, None)
            self._publish()
            self._condition.notify_all()

    # -- batches ----------------------------------------------------------------------------------------------------

    def _order(self, op: _Op, taken: dict[int, int] | None = None) -> tuple[int, int, int, int]:
        extra = taken.get(op.stream.serial, 0) if taken else 0
        return (op.stream.priority, op.stream.attained + extra, op.stream.serial, op.serial)

    def _next_batch(self) -> tuple[list[_Op], float | None]:
        """The ops of the next batch, or ([], seconds to wait) when none should run yet (None: until notified)."""
        if not self._queue:
            return [], None
        head = min(self._queue, key=self._order)
        if isinstance(head.key, _Call):
            return [head], None
        long = head.stream.long
        limit = min(self.batch_size, self.long_batch_size) if long else self.batch_size
        candidates = [op for op in self._queue
                      if op.key == head.key and op.stream.priority == head.stream.priority and op.stream.long == long]
        batch: list[_Op] = []
        taken: dict[int, int] = {}
        rows = 0
        while candidates:
            best = min(candidates, key=lambda op: self._order(op, taken))
            if batch and rows + best.rows > limit:
                break
            candidates.remove(best)
            # a stream's ops stay in order: an earlier op of the same stream and key goes first
            batch.append(best)
            rows += best.rows
            taken[best.stream.serial] = taken.get(best.stream.serial, 0) + best.rows
        wait = self._wait(head, full=rows >= limit)
        if wait is not None:
            return [], wait
        return batch, None

    def _wait(self, head: _Op, *, full: bool) -> float | None:
        """How long to hold the batch for a stream that is preparing its next op (nothing queued or running since at
        most `max_wait`: one just given its last result, typically its encoder output, about to decode): one of the
        same class may fill it, one of a higher class goes first. A stream idle for longer is busy elsewhere (reading
        its audio, its client) and is not waited for. A long streams' batch is held so for a newer stream of its class
        too, full or not. None: run now."""
        now = self.clock()
        until = now
        for stream in self._streams.values():
            if stream.cancelled or stream.queued or stream.running or stream is head.stream:
                continue
            same = stream.priority == head.stream.priority
            if (stream.priority < head.stream.priority or (same and not full)
                    or (same and head.stream.long and not stream.long)):
                until = max(until, stream.idle_since + self.max_wait)
        return until - now if until > now else None

    def _work(self) -> None:
        while True:
            with self._condition:
                while True:
                    if self._closed:
                        return
                    batch, wait = self._next_batch()
                    if batch:
                        break
                    self._condition.wait(wait)
                for op in batch:
                    self._queue.remove(op)
                    op.stream.queued -= 1
                    op.stream.running += 1
                    op.stream.attained += op.rows
                self._publish()
            started = self.clock()
            try:
                self._run(batch, started)
            finally:
                with self._condition:
                    finished = self.clock()
                    for op in batch:
                        op.stream.running -= 1
                        if not op.stream.running and not op.stream.queued:
                            op.stream.idle_since = finished
                    self._condition.notify_all()

    def _run(self, batch: list[_Op], started: float) -> None:
        rows = sum(op.rows for op in batch)
        name = "call" if isinstance(batch[0].key, _Call) else self.op_name(batch[0].key)
        self.stats.record(name, rows)
        if self.metrics is not None:
            self.metrics.batch_rows.labels(op=name).observe(rows)
            for op in batch:
                self.metrics.wait_seconds.labels(priority=op.stream.priority.name.lower()).observe(started - op.queued_at)
        if isinstance(batch[0].key, _Call):
            self._settle(batch[0], _attempt(batch[0].payload))
            return
        try:
            results = self.runner(batch[0].key, [op.payload for op in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the runner returned {len(results)} results for {len(batch)} ops")
        except Exception as exc:  # noqa: BLE001 - one op's bad input must not fail the others: isolate it
            if len(batch) == 1:
                self._settle(batch[0], exc)
                return
            if self.metrics is not None:
                self.metrics.failures.inc()
            logger.warning("batch failed; running its ops one by one", extra={"ops": len(batch), "error": repr(exc)[:200]})
            for op in batch:
                self._settle(op, _attempt(lambda op=op: self.runner(op.key, [op.payload])[0]))
            return
        for op, result in zip(batch, results):
            self._settle(op, result)

    @staticmethod
    def _settle(op: _Op, result: Any) -> None:
        if op.future.done():
            return
        if isinstance(result, BaseException):
            op.future.set_exception(result)
        else:
            op.future.set_result(result)

    def _publish(self) -> None:
        if self.metrics is None:
            return
        counts = {priority: 0 for priority in Priority}
        for op in self._queue:
            counts[op.stream.priority] += 1
        for priority, count in counts.items():
            self.metrics.queued.labels(priority=priority.name.lower()).set(count)
        self.metrics.streams.set(len(self._streams))


def _attempt(function: Callable[[], Any]) -> Any:
    try:
        return function()
    except Exception as exc:  # noqa: BLE001 - handed to the op's future
        return exc
