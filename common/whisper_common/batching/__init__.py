"""Batch scheduling of inference across requests: the scheduler (`scheduler`: ops, priorities, batches, cancellation)
and what it runs for Whisper (`ctranslate2_ops`: faster-whisper's CTranslate2 calls as ops that merge along the
batch dimension), with the per-request side that decodes a recording window by window (`windows_decode`)."""
from whisper_common.batching.scheduler import (
    BatchScheduler,
    Cancelled,
    Priority,
    SchedulerClosed,
    SchedulerMetrics,
    Stream,
)

__all__ = ["BatchScheduler", "Cancelled", "Priority", "SchedulerClosed", "SchedulerMetrics", "Stream"]
