"""The batch scheduler's settings (env prefix `SCHEDULER__`), a group of each service's settings class."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SchedulerSettings(BaseModel):
    """How windows of audio from different requests are decoded together (env prefix `SCHEDULER__`)."""

    batch_size: int = Field(
        8,
        ge=1,
        le=256,
        description="Most windows (up to 30 s of audio each) encoded or decoded in one CTranslate2 call, from any "
        "requests whose decoding options agree. 1: no batching (calls still run in priority order). On a GPU, raise "
        "it (16-64) with MAX_CONCURRENCY.",
    )
    max_wait_ms: float = Field(
        20,
        ge=0,
        le=1000,
        description="Longest a batch that is not full waits for more windows, in ms, counted from its first window; "
        "it waits only while another request is preparing its next window, so a lone request never waits.",
    )


def max_concurrency_field() -> Any:
    """MAX_CONCURRENCY in audio terms, for the services' settings classes."""
    return Field(
        8,
        ge=1,
        le=256,
        description="Recordings decoded at the same time. Each feeds the batch scheduler a few windows (up to 30 s "
        "of audio each) at a time, so a long file holds one of these slots for its whole length but only its windows' "
        "share of each batch: short requests in other slots keep their turn. At most this many recordings' windows "
        "are in memory at once. Keep it at least SCHEDULER__BATCH_SIZE, so batches can fill.",
    )


def max_queue_field() -> Any:
    return Field(
        16,
        ge=0,
        le=10_000,
        description="Recordings that may wait for a slot (uploaded, not decoded yet); beyond: 503 with Retry-After.",
    )
