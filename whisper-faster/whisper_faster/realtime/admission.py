"""Who may open a realtime session: at most MAX_REALTIME_SESSIONS, and none while the recent realtime factor says the
machine is not keeping up with the sessions it has. Also the realtime metrics (on the app's registry)."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.5, 2, 3, 5, 10)


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
    """Counts open sessions and the recent realtime factor; `refusal()` says why a new session may not open. The
    factor describes the sessions open now: with none open, nothing can be falling behind, so a new one is let in."""

    def __init__(self, max_sessions: int, max_load: float, metrics: RealtimeMetrics | None = None,
                 window_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 max_wait: float = float("inf")) -> None:
        self.max_sessions = max_sessions
        self.max_load = max_load
        self.max_wait = max_wait
        """A final that took longer than this (from asking to answer) also says the open sessions are at the limit."""
        self.metrics = metrics
        self.window_seconds = window_seconds
        self.clock = clock
        self.open = 0
        self._samples: deque[tuple[float, float, float]] = deque()
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
        return None

    def opened(self) -> None:
        self.open += 1
        self._publish()

    def closed(self) -> None:
        self.open -= 1
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
