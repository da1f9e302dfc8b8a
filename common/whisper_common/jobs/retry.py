"""When a failed job run or webhook delivery is tried again: how many attempts each gets, and the backoff between
them (`JOB_RETRY_SECONDS`, doubling, capped, with jitter). The store is handed the times this policy picks; no query
computes one.

    retry = RetryPolicy.from_settings(settings)
    run_after = now + retry.backoff.delay(job.attempts)     # 10 s, 20 s, 40 s ... ±20 %
    retry.webhook_gives_up(attempt)                          # after WEBHOOK_MAX_ATTEMPTS
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from whisper_common.settings import ServiceSettings


@dataclass(frozen=True)
class Backoff:
    """`base * 2**(attempt-1)` seconds, capped, with ± `jitter` so retries of many jobs or webhooks do not align."""

    base_seconds: float
    cap_seconds: float = 3600.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        delay = min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        return delay * random.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True)
class RetryPolicy:
    backoff: Backoff
    job_attempts: int
    """Runs a new job gets (kept on the job as `max_attempts`)."""
    webhook_attempts: int

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RetryPolicy:
        return cls(Backoff(settings.job_retry_seconds), settings.job_max_attempts, settings.webhook_max_attempts)

    def webhook_gives_up(self, attempt: int) -> bool:
        return attempt >= self.webhook_attempts
