"""The retry policy apart from the store: doubling backoff from JOB_RETRY_SECONDS, capped, with jitter; how many runs a
job and attempts a webhook get."""
from __future__ import annotations

import pytest

from whisper_common.jobs.retry import Backoff, RetryPolicy
from whisper_common.settings import ServiceSettings


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    backoff = Backoff(10, cap_seconds=60, jitter=0)
    assert [backoff.delay(attempt) for attempt in (0, 1, 2, 3, 4, 5)] == [10, 10, 20, 40, 60, 60]


def test_backoff_jitter_stays_within_its_bounds_and_spreads_retries() -> None:
    backoff = Backoff(10)
    delays = [backoff.delay(3) for _ in range(2000)]
    assert all(32 <= delay <= 48 for delay in delays)  # 40 s ± 20 %
    assert max(delays) - min(delays) > 10  # not all retries at one moment


def test_the_policy_is_read_from_the_settings() -> None:
    settings = ServiceSettings(job_retry_seconds=0.5, job_max_attempts=4, webhook_max_attempts=2)
    policy = RetryPolicy.from_settings(settings)
    assert policy.backoff.base_seconds == 0.5 and policy.job_attempts == 4
    assert not policy.webhook_gives_up(1) and policy.webhook_gives_up(2)
    with pytest.raises(AttributeError):
        policy.job_attempts = 5  # type: ignore[misc]  # frozen: shared by every loop of the process
