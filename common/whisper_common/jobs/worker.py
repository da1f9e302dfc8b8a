"""The worker loop: claim the oldest runnable job under a lease, keep the lease alive while it runs, end it once.

A run ends in exactly one of: succeeded (result kept), canceled (a DELETE arrived; the engine stopped at its next
segment), failed (a permanent error such as undecodable audio, or the last attempt failed), retried later with
backoff (a transient error: model load, memory, a download timeout), or released without counting (shutdown; the
inference gate was full). A worker whose lease was lost (it stalled past the lease and another worker took the job)
drops its result: the store refuses a finish from a former lease holder.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from whisper_common.errors import ApiError, ServerBusy
from whisper_common.jobs.context import JobsContext
from whisper_common.jobs.contract import JobEngine, transcript_to_json
from whisper_common.jobs.errors import PermanentJobError, TransientJobError
from whisper_common.jobs.records import JobRow, JobStatus
from whisper_common.jobs.outbound import download
from whisper_common.jobs.service import JOBS_ROUTE
from whisper_common.jobs.store import Finish
from whisper_common.transcript import Transcript
from whisper_common.usage.meter import metered

if TYPE_CHECKING:
    from whisper_common.jobs.runner import RunningHere, Wakeups

logger = logging.getLogger("whisper_common.jobs")


def new_holder() -> str:
    """A lease holder's name: host, process and loop, so an operator can tell who holds a job."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Run:
    job: JobRow
    cancel: threading.Event = field(default_factory=threading.Event)
    done: float = 0.0
    total: float | None = None
    lost: bool = False


class Worker:
    def __init__(
        self, context: JobsContext, engine: JobEngine, holder: str, wakeups: Wakeups, here: RunningHere
    ) -> None:
        self.context = context
        self.store = context.store
        self.engine = engine
        self.holder = holder
        self.wakeups = wakeups
        self.here = here

    async def run_forever(self) -> None:
        poll, lease = self.context.timings.poll_seconds, self.context.timings.lease_seconds
        while True:
            try:
                job = await asyncio.to_thread(self.store.claim, self.holder, time.time(), lease)
            except Exception as exc:  # noqa: BLE001 - the database may be away for a while; keep trying
                logger.warning("claiming a job failed", extra={"error": repr(exc)})
                await asyncio.sleep(poll)
                continue
            if job is None:
                await self.wakeups.wait_for_work()
                continue
            with self.here.holding():
                try:
                    await self.run(job)
                except Exception as exc:  # noqa: BLE001 - e.g. the database went away at the end; the lease expires
                    logger.error("job run could not be recorded", extra={"job_id": job.id}, exc_info=exc)
                    await asyncio.sleep(poll)

    async def run(self, job: JobRow) -> None:
        metrics = self.context.metrics
        run = _Run(job)
        started = time.perf_counter()
        logger.info("job started", extra={"job_id": job.id, "attempt": job.attempts})
        outcome: Finish | None = None
        transcript: Transcript | None = None
        with self.here.running(job.id, run.cancel):
            heartbeat = asyncio.create_task(self._heartbeat(run))
            try:
                transcript = await self._execute(run)
                if run.cancel.is_set():
                    outcome = Finish(JobStatus.CANCELED)
                else:
                    outcome = Finish(JobStatus.SUCCEEDED, result=transcript_to_json(transcript))
            except asyncio.CancelledError:
                run.cancel.set()
                self._release(job, time.time())  # shutting down: another worker (or this one, restarted) takes it over
                raise
            except ServerBusy as exc:
                self._release(job, time.time() + exc.retry_after)
                return
            except Exception as exc:  # noqa: BLE001 - every failure ends the run with a reason (or a retry)
                outcome = Finish(JobStatus.CANCELED) if run.cancel.is_set() else await self._failed(run, exc)
            finally:
                heartbeat.cancel()
                metrics.run_seconds.observe(time.perf_counter() - started)
        if outcome is None:
            await self._forget_if_erased(job)
            return
        if run.cancel.is_set() and outcome.status is not JobStatus.SUCCEEDED and not run.lost:
            outcome = Finish(JobStatus.CANCELED)
        done = run.total if outcome.status is JobStatus.SUCCEEDED and run.total is not None else run.done
        outcome = dataclasses.replace(outcome, audio_seconds=run.total, audio_seconds_done=done)
        finished = None if run.lost else await asyncio.to_thread(
            self.store.finish, job.id, self.holder, outcome, time.time()
        )
        if finished is None:
            metrics.attempts.labels(outcome="lost").inc()
            if not await self._forget_if_erased(job):
                logger.warning("job lease lost; its result was dropped", extra={"job_id": job.id})
            return
        metrics.attempts.labels(outcome=outcome.status.value).inc()
        logger.info("job finished", extra={"job_id": job.id, "status": outcome.status.value})
        self.wakeups.deliveries_due()
        if outcome.status is JobStatus.SUCCEEDED and transcript is not None:
            await self._index(finished, transcript)

    async def _index(self, job: JobRow, transcript: Transcript) -> None:
        """The transcript into the library, for search; a failure there never fails the job (it stays readable)."""
        library = self.context.transcripts
        if library is None:
            return
        try:
            await library.job_succeeded(job, transcript, still_stored=lambda: self.store.peek(job.id) is not None)
        except Exception as exc:  # noqa: BLE001 - logged; the job's result is kept all the same
            logger.warning("the job's transcript could not be indexed for search", extra={"job_id": job.id,
                                                                                          "error": repr(exc)})

    async def _forget_if_erased(self, job: JobRow) -> bool:
        """A job whose row is gone was erased with its owner's data while it ran: what the run wrote (a downloaded
        audio_url) goes too."""
        if await asyncio.to_thread(self.store.peek, job.id) is not None:
            return False
        await asyncio.to_thread(self.context.files.remove, job.id)
        logger.info("job erased while it ran; nothing of it was kept", extra={"job_id": job.id})
        return True

    async def _failed(self, run: _Run, exc: Exception) -> Finish | None:
        """Permanent failures end the job; transient ones are retried with backoff while attempts remain."""
        if isinstance(exc, PermanentJobError):
            return Finish(JobStatus.FAILED, error_message=exc.message, error_code=exc.code)
        if isinstance(exc, ApiError):
            if exc.status_code < 500:
                return Finish(JobStatus.FAILED, error_message=exc.message, error_code=exc.code or "invalid_request")
            return await self._transient(run, exc.message, exc.code or "server_error")
        if isinstance(exc, TransientJobError):
            return await self._transient(run, str(exc), "transient_error")
        if isinstance(exc, MemoryError):
            return await self._transient(run, "the transcription ran out of memory", "out_of_memory")
        logger.error("job run failed", extra={"job_id": run.job.id}, exc_info=exc)
        return await self._transient(run, f"internal error ({type(exc).__name__})", "internal_error")

    async def _transient(self, run: _Run, message: str, code: str) -> Finish | None:
        job = run.job
        if job.attempts >= job.max_attempts:
            return Finish(
                JobStatus.FAILED, error_message=f"{message} (after {job.attempts} attempts)", error_code=code
            )
        run_after = time.time() + self.context.retry.backoff.delay(job.attempts)
        if await asyncio.to_thread(self.store.retry_later, job.id, self.holder, run_after, message, code):
            self.context.metrics.attempts.labels(outcome="retried").inc()
            logger.info("job will be retried", extra={"job_id": job.id, "attempt": job.attempts, "error": message})
            return None
        current = await asyncio.to_thread(self.store.peek, job.id)
        if current is not None and current.cancel_requested and current.status is JobStatus.RUNNING:
            return Finish(JobStatus.CANCELED)  # a cancel asked during the failed attempt wins over the retry
        return None

    def _release(self, job: JobRow, run_after: float) -> None:
        try:
            if self.store.release(job.id, self.holder, run_after):
                self.context.metrics.attempts.labels(outcome="released").inc()
                logger.info("job released", extra={"job_id": job.id})
        except Exception as exc:  # noqa: BLE001 - the lease expires anyway
            logger.warning("releasing a job failed", extra={"job_id": job.id, "error": repr(exc)})

    async def _execute(self, run: _Run) -> Transcript:
        job = run.job
        audio = await self._audio(job)
        try:
            options = self.engine.options_model.model_validate(job.options_dict)
        except ValidationError as exc:
            raise PermanentJobError(f"the job's options are no longer valid: {exc.errors()[0]['msg']}") from None

        def progress(done: float, total: float | None) -> None:
            run.done = done
            if total is not None:
                run.total = total

        with metered(job.owner, JOBS_ROUTE):  # the inference's audio seconds are the job owner's usage
            return await self.engine.run(audio, options, progress, run.cancel)

    async def _audio(self, job: JobRow) -> Path:
        files = self.context.files
        if job.audio_file is not None:
            path = files.resolve(job.audio_file)
            if not path.is_file():
                raise PermanentJobError(
                    "the job's audio file is missing from DATA_DIR (processes sharing a queue must share DATA_DIR)",
                    "audio_missing",
                )
            return path
        if job.audio_url is None:
            raise PermanentJobError("the job has no audio", "audio_missing")
        destination = files.audio_path(job.id)
        destination.parent.mkdir(parents=True, exist_ok=True)
        context = self.context
        await download(
            context.outbound, context.client, job.audio_url, destination, context.max_download_bytes,
            context.timings.download_seconds,
        )
        await asyncio.to_thread(self.store.set_audio, job.id, self.holder, files.relative(destination))
        return destination

    async def _heartbeat(self, run: _Run) -> None:
        lease = self.context.timings.lease_seconds
        while True:
            await asyncio.sleep(self.context.timings.heartbeat_seconds)
            try:
                cancel = await asyncio.to_thread(
                    self.store.renew, run.job.id, self.holder, time.time() + lease, run.done, run.total
                )
            except Exception as exc:  # noqa: BLE001 - try again next beat; the lease outlives a few misses
                logger.warning("renewing a job lease failed", extra={"job_id": run.job.id, "error": repr(exc)})
                continue
            if cancel is None:
                run.lost = True
                run.cancel.set()
                return
            if cancel:
                run.cancel.set()
