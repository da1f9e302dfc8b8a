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
    long_after_rows: int = Field(
        16,
        ge=1,
        le=1_000_000,
        description="Rows (windows encoded or decoded) after which a recording counts as long; a 30 s request takes "
        "2-6. A long recording's batches never take in a newer request's windows, hold at most "
        "SCHEDULER__LONG_BATCH_SIZE rows, and wait (up to SCHEDULER__MAX_WAIT_MS) while a newer request of the same "
        "or a higher class prepares its next window, so a short request beside an hour-long file runs almost as on "
        "an idle service.",
    )
    long_batch_size: int = Field(
        2,
        ge=1,
        le=256,
        description="Most rows in a batch of long recordings' windows: a request that arrives waits for at most one "
        "such batch. On a CPU a batch's time grows with its rows (tiny.en, int8, 2 cores: 0.86, 0.68, 0.65 and 0.68 s "
        "per row at 1, 2, 4 and 8 rows), so 2 keeps nearly all of batching's gain; on a GPU, where more rows cost "
        "little, set it to SCHEDULER__BATCH_SIZE.",
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
