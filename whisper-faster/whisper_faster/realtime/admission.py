"""Who may open a realtime session: at most MAX_REALTIME_SESSIONS, none while the recent realtime factor says the
machine is not keeping up with the sessions it has, and none that would push the service's CPU use past
REALTIME_MAX_CPU. Also the realtime metrics (on the app's registry)."""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.5, 2, 3, 5, 10)
MIN_CPU_SPAN_SECONDS = 5.0
"""CPU use is only judged over at least this much time (one decode is a burst, not a load)."""
COST_SMOOTHING = 0.3
MIN_SAMPLE_INTERVAL_SECONDS = 0.5
"""Every open session's ticker calls `sample()`; one sample per interval serves them all."""


def usable_cores(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> float:
    """The CPUs this process may use: its affinity, or less where a cgroup quota (a container's --cpus) says so."""
    cores = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return max(cores, 0.01)


class RealtimeMetrics:
    def __init__(self, registry: CollectorRegistry, namespace: str = "whisper_faster") -> None:
        self.sessions = Gauge("realtime_sessions", "Realtime sessions open now.", namespace=namespace,
                              registry=registry)
        self.rejected = Counter("realtime_sessions_rejected", "Realtime sessions refused or closed with 1013, by "
                                "reason (limit, overloaded, lagging).", ["reason"], namespace=namespace,
                                registry=registry)
        self.completed_latency = Histogram(
            "realtime_completed_latency_seconds", "From the end of an utterance (its last voiced audio received) to "
            "its `completed` event.", namespace=namespace, registry=registry, buckets=_LATENCY_BUCKETS,
        )
        self.factor = Gauge("realtime_factor", "Inference seconds (queueing included) per second of utterance audio "
                            "over the recent window; above 1 the sessions fall behind.", namespace=namespace,
                            registry=registry)


class Admission:
    """Counts open sessions, the recent realtime factor and the service's CPU use; `refusal()` says why a new session
    may not open. Both describe the sessions open now: with none open, nothing can be falling behind, so a new one is
    let in. What one session costs in CPU is learned while sessions run (`sample()`, about once a second) and kept, so
    the session that would overload the machine is refused at the handshake instead of making every session lag."""

    def __init__(self, max_sessions: int, max_load: float, metrics: RealtimeMetrics | None = None,
                 window_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 max_wait: float = float("inf"), max_cpu: float = float("inf"),
                 cpu_clock: Callable[[], float] = time.process_time, cores: float | None = None) -> None:
        self.max_sessions = max_sessions
        self.max_load = max_load
        self.max_wait = max_wait
        """A final that took longer than this (from asking to answer) also says the open sessions are at the limit."""
        self.metrics = metrics
        self.window_seconds = window_seconds
        self.clock = clock
        self.max_cpu = max_cpu
        self.cpu_clock = cpu_clock
        self.cores = cores if cores is not None else usable_cores()
        self.session_cost: float | None = None
        """The share of the CPUs one open session has used (smoothed); None until measured."""
        self.open = 0
        self._samples: deque[tuple[float, float, float]] = deque()
        self._cpu: deque[tuple[float, float]] = deque()
        self._changed_at = clock()
        if metrics is not None:
            metrics.factor.set_function(lambda: self.factor)

    def refusal(self) -> tuple[str, str] | None:
        """(reason, message) when a new session must be refused, else None."""
        if self.open >= self.max_sessions:
            return "limit", (f"{self.open} realtime sessions are open, the most this server allows "
                             f"(MAX_REALTIME_SESSIONS={self.max_sessions}); try again later")
        if self.open > 0 and self.factor > self.max_load:
            return "overloaded", (f"the server is not keeping up with its open sessions (realtime factor "
                                  f"{self.factor:.2f} > {self.max_load:g}); try again later")
        if self.open > 0 and self.slowest > self.max_wait:
            return "overloaded", (f"the open sessions' transcripts already take up to {self.slowest:.1f} s; try again "
                                  "later")
        if self.open > 0 and self.session_cost is not None:
            # Sessions that just opened have not shown their cost yet: count each as what sessions have cost.
            use = max(self.cpu_use or 0.0, self.open * self.session_cost)
            if use + self.session_cost > self.max_cpu:
                return "overloaded", (
                    f"the open sessions use {use:.0%} of the CPUs and one more would bring that to about "
                    f"{use + self.session_cost:.0%} (REALTIME_MAX_CPU={self.max_cpu:g}); try again later"
                )
        return None

    def sample(self) -> None:
        """Note the process's CPU time now; while sessions are open, update what one session costs."""
        now = self.clock()
        if self._cpu and now - self._cpu[-1][0] < MIN_SAMPLE_INTERVAL_SECONDS:
            return
        self._cpu.append((now, self.cpu_clock()))
        while len(self._cpu) > 2 and self._cpu[0][0] < now - self.window_seconds:
            self._cpu.popleft()
        use = self._use_since(self._changed_at)
        if self.open > 0 and use is not None:
            cost = use / self.open
            self.session_cost = cost if self.session_cost is None else (
                COST_SMOOTHING * cost + (1 - COST_SMOOTHING) * self.session_cost)

    @property
    def cpu_use(self) -> float | None:
        """The service's CPU use over the recent window, as a share of the usable CPUs (None: too short to say)."""
        return self._use_since(float("-inf"))

    def _use_since(self, since: float) -> float | None:
        """CPU use over the samples taken at or after `since` (the cost of one session is only learned over a time
        when the number of open sessions did not change)."""
        samples = [sample for sample in self._cpu if sample[0] >= since]
        if len(samples) < 2 or samples[-1][0] - samples[0][0] < MIN_CPU_SPAN_SECONDS:
            return None
        (start, cpu_start), (end, cpu_end) = samples[0], samples[-1]
        return (cpu_end - cpu_start) / (end - start) / self.cores

    def opened(self) -> None:
        self.open += 1
        self._changed_at = self.clock()
        self._publish()

    def closed(self) -> None:
        self.open -= 1
        self._changed_at = self.clock()
        self._publish()

    def rejected(self, reason: str) -> None:
        if self.metrics:
            self.metrics.rejected.labels(reason=reason).inc()

    def record(self, inference_seconds: float, audio_seconds: float) -> None:
        """A final transcript took `inference_seconds` (from asking to answer) for `audio_seconds` of speech."""
        self._samples.append((self.clock(), inference_seconds, audio_seconds))

    def observe_latency(self, seconds: float) -> None:
        if self.metrics:
            self.metrics.completed_latency.observe(seconds)

    @property
    def slowest(self) -> float:
        """The longest final of the recent window, from asking to answer."""
        self._expire()
        return max((sample[1] for sample in self._samples), default=0.0)

    def _expire(self) -> None:
        horizon = self.clock() - self.window_seconds
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    @property
    def factor(self) -> float:
        self._expire()
        audio = sum(sample[2] for sample in self._samples)
        return sum(sample[1] for sample in self._samples) / audio if audio > 0 else 0.0

    def _publish(self) -> None:
        if self.metrics:
            self.metrics.sessions.set(self.open)
