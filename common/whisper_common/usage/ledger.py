"""Usage counted as it happens, per owner: Prometheus counters at once, and the usage table every
USAGE_FLUSH_SECONDS (a request never waits for the database).

    ledger = UsageLedger("whisper_faster", registry, namespace="whisper_faster")
    ledger.request("team-a", "/v1/audio/transcriptions")
    ledger.audio("team-a", "/v1/audio/transcriptions", "tiny.en", 11.0)
    ledger.job("team-a", "/v1/jobs", "tiny.en")
    ledger.attach(store); await ledger.flush_now()            # serve_usage does both
    ledger.today_audio_seconds("team-a")                      # what the daily quota compares with

The counters are labelled by owner: one series per key or edge user (bounded by their number), route template and
model. `today_audio_seconds` is what the table held for today at the last flush (every process's) plus what this
process counted since.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter

from whisper_common.usage.store import UsageRow, UsageStore

logger = logging.getLogger("whisper_common.usage")

Key = tuple[str, str, str, str]  # day, owner, route, model


_DAYS: dict[int, str] = {}


def utc_day(timestamp: float | None = None) -> str:
    """`YYYY-MM-DD` (UTC) of `timestamp` (now); cached per day, it is asked on every request."""
    number = int((time.time() if timestamp is None else timestamp) // 86400)
    day = _DAYS.get(number)
    if day is None:
        day = _DAYS[number] = datetime.fromtimestamp(number * 86400, timezone.utc).strftime("%Y-%m-%d")
        if len(_DAYS) > 64:
            _DAYS.pop(next(iter(_DAYS)))
    return day


class UsageLedger:
    def __init__(self, service: str, registry: CollectorRegistry, namespace: str) -> None:
        self.service = service
        self.store: UsageStore | None = None
        self._lock = threading.Lock()  # counted from the event loop and from inference threads
        self._pending: dict[Key, list[float]] = {}
        self._pending_audio_today: dict[str, float] = {}
        self._flushing_audio_today: dict[str, float] = {}  # written, not yet in _persisted_audio
        self._persisted_day = utc_day()
        self._persisted_audio: dict[str, float] = {}
        self._request_counters: dict[tuple[str, str], Counter] = {}
        self.requests_total = Counter(
            "owner_requests", "Requests by owner and route template (authenticated routes).",
            ["owner", "route"], namespace=namespace, registry=registry,
        )
        self.audio_seconds_total = Counter(
            "owner_audio_seconds", "Seconds of audio transcribed, by owner, route template and model.",
            ["owner", "route", "model"], namespace=namespace, registry=registry,
        )
        self.jobs_total = Counter(
            "owner_jobs", "Jobs accepted, by owner and model.", ["owner", "model"], namespace=namespace,
            registry=registry,
        )

    # --- counting ---

    def request(self, owner: str, route: str) -> None:
        counter = self._request_counters.get((owner, route))
        if counter is None:  # one child per owner and route: labels() looks up and locks on every call
            counter = self._request_counters[(owner, route)] = self.requests_total.labels(owner, route)
        counter.inc()
        self._add((utc_day(), owner, route, ""), 0, 1.0)

    def audio(self, owner: str, route: str, model: str, seconds: float) -> None:
        if seconds <= 0:
            return
        self.audio_seconds_total.labels(owner, route, model).inc(seconds)
        day = utc_day()
        with self._lock:
            self._add_locked((day, owner, route, model), 1, seconds)
            if day == self._persisted_day:
                self._pending_audio_today[owner] = self._pending_audio_today.get(owner, 0.0) + seconds

    def job(self, owner: str, route: str, model: str) -> None:
        self.jobs_total.labels(owner, model).inc()
        self._add((utc_day(), owner, route, model), 2, 1.0)

    def _add(self, key: Key, index: int, amount: float) -> None:
        with self._lock:
            self._add_locked(key, index, amount)

    def _add_locked(self, key: Key, index: int, amount: float) -> None:
        counts = self._pending.get(key)
        if counts is None:
            counts = self._pending[key] = [0.0, 0.0, 0.0]
        counts[index] += amount

    def today_audio_seconds(self, owner: str) -> float:
        with self._lock:
            if self._persisted_day != utc_day():
                return self._pending_audio_today_for_new_day(owner)
            return (self._persisted_audio.get(owner, 0.0) + self._flushing_audio_today.get(owner, 0.0)
                    + self._pending_audio_today.get(owner, 0.0))

    def _pending_audio_today_for_new_day(self, owner: str) -> float:
        """Past midnight, before the next flush: only what was counted today (a flush re-reads the table)."""
        today = utc_day()
        return sum(counts[1] for (day, name, _, _), counts in self._pending.items() if day == today and name == owner)

    # --- the table ---

    def attach(self, store: UsageStore) -> None:
        self.store = store

    def flush(self) -> None:
        """Add what was counted to the table and re-read today's audio per owner (blocking: run it in a thread)."""
        store = self.store
        if store is None:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
            pending_today, self._pending_audio_today = self._pending_audio_today, {}
            self._flushing_audio_today = pending_today
        rows = [UsageRow(day, owner, route, model, int(c[0]), c[1], int(c[2]))
                for (day, owner, route, model), c in pending.items()]
        try:
            if rows:
                store.add(self.service, rows)
        except BaseException:
            with self._lock:  # put them back: counted at the next flush
                for key, counts in pending.items():
                    for index, amount in enumerate(counts):
                        self._add_locked(key, index, amount)
                for owner, seconds in pending_today.items():
                    self._pending_audio_today[owner] = self._pending_audio_today.get(owner, 0.0) + seconds
                self._flushing_audio_today = {}
            raise
        today = utc_day()
        try:
            totals = store.audio_seconds_on(self.service, today)
        except BaseException:
            with self._lock:  # written already: keep counting it until a read succeeds
                for owner, seconds in self._flushing_audio_today.items():
                    self._persisted_audio[owner] = self._persisted_audio.get(owner, 0.0) + seconds
                self._flushing_audio_today = {}
            raise
        with self._lock:
            self._persisted_day, self._persisted_audio = today, totals
            self._flushing_audio_today = {}

    async def flush_now(self) -> None:
        await asyncio.to_thread(self.flush)
