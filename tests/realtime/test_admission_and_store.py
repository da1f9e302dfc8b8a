"""Admission (the session limit and the realtime factor, with an injected clock) and the session store (SQLite here;
PostgreSQL, and the fixture of the release before schema versions, in tests/db/test_release_upgrade.py)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from whisper_common.owners import ANONYMOUS, Owner, Role
from whisper_faster.realtime.admission import Admission, RealtimeMetrics, usable_cores
from whisper_faster.settings import Settings
from whisper_faster.realtime.store import SqlSessionStore, StoredUtterance, open_session_store


def sqlite_store(data_dir: Path) -> SqlSessionStore:
    return open_session_store(Settings(data_dir=data_dir, jobs_database_url=None))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_session_limit_refuses_the_one_too_many() -> None:
    admission = Admission(max_sessions=2, max_load=0.7)
    admission.opened()
    assert admission.refusal() is None
    admission.opened()
    reason, message = admission.refusal()
    assert reason == "limit" and "MAX_REALTIME_SESSIONS=2" in message
    admission.closed()
    assert admission.refusal() is None


def test_a_high_realtime_factor_refuses_while_sessions_are_open_and_fades_with_the_window() -> None:
    clock = Clock()
    admission = Admission(max_sessions=10, max_load=0.7, window_seconds=30, clock=clock)
    admission.opened()
    admission.record(inference_seconds=2.0, audio_seconds=2.5)
    assert admission.factor == 0.8
    assert admission.refusal()[0] == "overloaded"
    admission.closed()
    assert admission.refusal() is None  # nobody open: nothing can be falling behind
    admission.opened()
    clock.now += 31
    assert admission.factor == 0.0 and admission.refusal() is None


def test_slow_finals_refuse_new_sessions_before_the_open_ones_lag() -> None:
    clock = Clock()
    admission = Admission(max_sessions=10, max_load=5, window_seconds=30, clock=clock, max_wait=3)
    admission.opened()
    admission.record(inference_seconds=2.0, audio_seconds=20.0)
    assert admission.refusal() is None
    admission.record(inference_seconds=3.5, audio_seconds=20.0)  # a low factor, but one final waited 3.5 s
    reason, message = admission.refusal()
    assert reason == "overloaded" and "3.5 s" in message
    clock.now += 31
    assert admission.refusal() is None


def test_a_session_that_would_push_cpu_use_past_the_limit_is_refused_once_a_session_has_shown_its_cost() -> None:
    clock, cpu = Clock(), Clock()  # wall time, and the process's CPU seconds
    admission = Admission(max_sessions=10, max_load=5, clock=clock, max_cpu=0.6, cpu_clock=cpu, cores=2)
    admission.opened()
    assert admission.refusal() is None  # nothing measured yet: let it in
    admission.closed()
    admission.opened()
    for _ in range(10):  # one session uses 0.9 CPU seconds per second of 2 cores: 45 %
        clock.now += 1
        cpu.now += 0.9
        admission.sample()
    assert admission.session_cost == pytest.approx(0.45, abs=0.01)
    reason, message = admission.refusal()
    assert reason == "overloaded" and "REALTIME_MAX_CPU=0.6" in message and "45%" in message
    admission.closed()
    assert admission.refusal() is None  # the first session always opens
    # Long idle: the CPU window is quiet, but a session that just opened still counts as what one costs.
    clock.now += 300
    admission.opened()
    assert admission.refusal()[0] == "overloaded"


def test_the_tickers_of_several_sessions_take_one_cpu_sample_between_them() -> None:
    clock, cpu = Clock(), Clock()
    admission = Admission(max_sessions=10, max_load=5, clock=clock, max_cpu=0.6, cpu_clock=cpu, cores=2)
    for _ in range(3):
        admission.opened()
    for _ in range(8):
        clock.now += 1
        cpu.now += 1.2  # three sessions, 0.4 CPU seconds a second each
        for _ in range(3):  # each session's ticker samples
            admission.sample()
    assert admission.session_cost == pytest.approx(0.2, abs=0.01)  # 60 % of 2 cores over 3 sessions


def test_cheap_sessions_on_many_cores_are_let_in_up_to_the_cpu_limit() -> None:
    clock, cpu = Clock(), Clock()  # wall time, and the process's CPU seconds
    admission = Admission(max_sessions=100, max_load=5, clock=clock, max_cpu=0.6, cpu_clock=cpu, cores=16)
    admission.opened()
    for _ in range(10):
        clock.now += 1
        cpu.now += 0.9  # 0.9 / 16 = 5.6 % per session
        admission.sample()
    admitted = 1
    while admission.refusal() is None:
        admission.opened()
        admitted += 1
    assert admitted == 10  # 10 x 5.6 % = 56 %; the 11th would pass 60 %


def test_usable_cores_reads_a_containers_cpu_quota(tmp_path: Path) -> None:
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert usable_cores(quota) == pytest.approx(min(1.5, len(os.sched_getaffinity(0))))
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path / "missing") == len(os.sched_getaffinity(0))


def test_metrics_are_exported_with_the_names_the_alerts_use() -> None:
    registry = CollectorRegistry()
    clock = Clock()
    admission = Admission(max_sessions=1, max_load=0.7, metrics=RealtimeMetrics(registry), clock=clock)
    admission.opened()
    admission.rejected("limit")
    admission.observe_latency(0.4)
    admission.record(1.0, 4.0)
    text = generate_latest(registry).decode()
    assert "whisper_faster_realtime_sessions 1.0" in text
    assert 'whisper_faster_realtime_sessions_rejected_total{reason="limit"} 1.0' in text
    assert "whisper_faster_realtime_completed_latency_seconds_count 1.0" in text
    assert "whisper_faster_realtime_factor 0.25" in text


def test_the_store_keeps_utterances_in_order_across_reopening(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "data")
    store.create("sess_1", "tiny.en")
    store.add_utterance("sess_1", StoredUtterance("item_a", 0.5, 2.0, "Hello."))
    store.add_utterance("sess_1", StoredUtterance("item_b", 3.0, 4.5, "Again."))
    store.close("sess_1", "small")
    store.shutdown()
    reopened = sqlite_store(tmp_path / "data")
    stored = reopened.get("sess_1", ANONYMOUS)
    assert stored is not None and stored.model == "small" and stored.closed_at is not None
    assert [u.text for u in stored.utterances] == ["Hello.", "Again."]
    assert stored.duration == 4.5
    assert reopened.get("sess_2", ANONYMOUS) is None


def test_sessions_past_their_retention_are_removed_with_their_utterances(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    store.create("sess_old", "tiny.en")
    store.add_utterance("sess_old", StoredUtterance("item_a", 0.5, 2.0, "Hello."))
    store.close("sess_old", "tiny.en")
    store.create("sess_crashed", "tiny.en")  # never closed: the process died
    assert store.remove_ended_before(time.time() - 60) == 0
    assert store.remove_ended_before(time.time() + 1) == 2
    assert store.get("sess_old", ANONYMOUS) is None and store.get("sess_crashed", ANONYMOUS) is None
    store.create("sess_old", "tiny.en")  # the id is free again, and no orphan utterance comes back with it
    assert store.get("sess_old", ANONYMOUS).utterances == []
    store.shutdown()


def test_a_session_is_read_by_its_owner_or_an_admin_and_erased_with_its_owner(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    store.create("sess_a", "tiny.en", owner="team-a")
    store.add_utterance("sess_a", StoredUtterance("item_a", 0.5, 2.0, "Budget approved."))
    store.create("sess_b", "tiny.en", owner="team-b")
    team_a, team_b, admin = Owner("team-a"), Owner("team-b"), Owner("boss", Role.ADMIN)
    assert store.get("sess_a", team_a).owner == "team-a"  # type: ignore[union-attr]
    assert store.get("sess_a", team_b) is None and store.get("sess_a", admin) is not None
    assert store.erase_owner("team-a") == 1
    assert store.get("sess_a", admin) is None and store.get("sess_b", team_b) is not None
    store.add_utterance("sess_a", StoredUtterance("item_b", 3.0, 4.0, "After the erasure."))  # a session still open
    with store.db.transaction() as tx:
        assert tx.execute("SELECT COUNT(*) AS n FROM realtime_utterances WHERE session_id = 'sess_a'")[0]["n"] == 0
    store.shutdown()


def test_realtime_retention_takes_durations() -> None:
    assert Settings(realtime_retention="12h").realtime_retention == 12 * 3600
    assert Settings().realtime_retention == 7 * 86400
