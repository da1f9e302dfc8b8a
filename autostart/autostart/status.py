"""What the proxy tells about itself: Prometheus metrics, the status document, and event log lines.

`Reporter` is the state machine's observer. Gauges (in flight, waiting, state) are read from the
lifecycles when scraped, so the hot path only increments one cached counter per request.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import AutostartError, StartTimeout
from .lifecycle import ServiceLifecycle, State

log = logging.getLogger("autostart")

WAKE_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class _LifecycleGauges(Collector):
    """Read at scrape time: requests by status, in flight, waiting, state."""

    def __init__(self, lifecycles: Mapping[str, ServiceLifecycle], request_counts: dict[tuple[str, int], int]) -> None:
        self._lifecycles = lifecycles
        self._request_counts = request_counts

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        requests = CounterMetricFamily(
            "autostart_requests", "Requests answered, by service and HTTP status", labels=["service", "status"]
        )
        for (service, status), count in sorted(self._request_counts.items()):
            requests.add_metric([service, str(status)], count)
        yield requests
        in_flight = GaugeMetricFamily("autostart_in_flight", "Requests being proxied now", labels=["service"])
        waiting = GaugeMetricFamily("autostart_waiting", "Requests waiting for a start", labels=["service"])
        state = GaugeMetricFamily("autostart_service_state", "1 for the state the service is in", labels=["service", "state"])
        for lifecycle in self._lifecycles.values():
            in_flight.add_metric([lifecycle.name], lifecycle.in_flight)
            waiting.add_metric([lifecycle.name], lifecycle.waiting)
            for candidate in State:
                state.add_metric([lifecycle.name, candidate.value], float(lifecycle.state is candidate))
        yield from (in_flight, waiting, state)


class Metrics:
    def __init__(self, lifecycles: Mapping[str, ServiceLifecycle]) -> None:
        self.registry = CollectorRegistry()
        self.wakes = Counter(
            "autostart_wakes", "Starts of a service, by outcome", ["service", "outcome"], registry=self.registry
        )
        self.wake_seconds = Histogram(
            "autostart_wake_seconds", "Seconds from start to healthy", ["service"], buckets=WAKE_BUCKETS,
            registry=self.registry,
        )
        self.stops = Counter("autostart_stops", "Stops, by reason", ["service", "reason"], registry=self.registry)
        self.stops_postponed = Counter(
            "autostart_stops_postponed", "Idle stops postponed because the service was busy (jobs, sessions)",
            ["service"], registry=self.registry,
        )
        # Counted in a plain dict on the hot path (one event loop thread, no lock needed); exposed when scraped.
        self.request_counts: dict[tuple[str, int], int] = {}
        self.registry.register(_LifecycleGauges(lifecycles, self.request_counts))

    def count_request(self, service: str, status: int) -> None:
        key = (service, status)
        self.request_counts[key] = self.request_counts.get(key, 0) + 1

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Reporter:
    """The lifecycles' observer: metrics plus one log line per event."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def state_changed(self, service: str, old: State, new: State, reason: str) -> None:
        log.info("state changed", extra={"service": service, "from": old.value, "to": new.value, "reason": reason})

    def wake_finished(self, service: str, seconds: float, error: AutostartError | None) -> None:
        if error is None:
            self.metrics.wakes.labels(service, "ok").inc()
            self.metrics.wake_seconds.labels(service).observe(seconds)
            log.info("service ready", extra={"service": service, "wakeSeconds": round(seconds, 3)})
        else:
            outcome = "timeout" if isinstance(error, StartTimeout) else "failed"
            self.metrics.wakes.labels(service, outcome).inc()
            log.error(
                "start failed",
                extra={"service": service, "outcome": outcome, "reason": error.message, "afterSeconds": round(seconds, 3)},
            )

    def stopped(self, service: str, reason: str) -> None:
        self.metrics.stops.labels(service, reason).inc()
        log.info("service stopped", extra={"service": service, "reason": reason})

    def problem(self, service: str, message: str) -> None:
        log.warning("provider problem", extra={"service": service, "reason": message})

    def stop_postponed(self, service: str, reason: str) -> None:
        self.metrics.stops_postponed.labels(service).inc()
        log.info("idle stop postponed", extra={"service": service, "reason": reason})

    def hold_changed(self, service: str, held: bool, reason: str) -> None:
        log.info("service held" if held else "hold ended", extra={"service": service, "reason": reason})

    def resumed(self, service: str, reason: str) -> None:
        log.info("service resumed after the proxy started", extra={"service": service, "reason": reason})


def status_document(lifecycles: Mapping[str, ServiceLifecycle]) -> dict[str, object]:
    return {
        "services": {
            host: {"name": lifecycle.name, **lifecycle.snapshot()} for host, lifecycle in lifecycles.items()
        }
    }
