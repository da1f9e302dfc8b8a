"""The webhook outbox: deliveries written with the finished job (same transaction) are sent here, at least once.

Each delivery keeps its `webhook-id` and body across retries (receivers deduplicate by id). 2xx delivers; timeouts,
connection errors, 5xx and 429 are retried with exponential backoff and jitter up to WEBHOOK_MAX_ATTEMPTS; any other
status (3xx included: webhooks do not follow redirects) fails without retry; 410 Gone also disables the URL for every
later delivery. Every attempt is recorded on the job.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import httpx

from whisper_common.jobs.errors import OutboundRefused
from whisper_common.jobs.model import DeliveryRow
from whisper_common.jobs.outbound import transient_status
from whisper_common.jobs.store import backoff

if TYPE_CHECKING:
    from whisper_common.jobs.runtime import JobsRuntime

logger = logging.getLogger("whisper_common.jobs.webhooks")


class Outbox:
    def __init__(self, runtime: JobsRuntime, owner: str) -> None:
        self.runtime = runtime
        self.owner = owner

    async def run_forever(self) -> None:
        runtime = self.runtime
        lease = runtime.webhook_timeout + 30
        while True:
            try:
                delivery = await asyncio.to_thread(runtime.store.claim_delivery, self.owner, time.time(), lease)
            except Exception as exc:  # noqa: BLE001 - keep trying while the database is away
                logger.warning("claiming a webhook delivery failed", extra={"error": repr(exc)})
                delivery = None
            if delivery is None:
                runtime.outbox_ready.clear()
                try:
                    await asyncio.wait_for(runtime.outbox_ready.wait(), runtime.poll_seconds)
                except TimeoutError:
                    pass
                continue
            try:
                await self.deliver(delivery)
            except Exception as exc:  # noqa: BLE001 - the delivery's lease expires and it is sent again
                logger.error("webhook delivery could not be recorded", extra={"webhook_id": delivery.id}, exc_info=exc)
                await asyncio.sleep(runtime.poll_seconds)

    async def deliver(self, delivery: DeliveryRow) -> None:
        outcome, status_code, error = await self._attempt(delivery)
        attempt = delivery.attempts + 1
        next_attempt_at = None
        if outcome == "retrying":
            if attempt >= self.runtime.webhook_max_attempts:
                outcome = "failed"
                error = f"{error}; gave up after {attempt} attempts"
            else:
                next_attempt_at = time.time() + backoff(self.runtime.retry_seconds, attempt)
        self.runtime.metrics.webhook_deliveries.labels(outcome=outcome).inc()
        logger.info(
            "webhook attempt",
            extra={"job_id": delivery.job_id, "webhook_id": delivery.id, "attempt": attempt, "outcome": outcome,
                   "status_code": status_code},
        )
        await asyncio.to_thread(
            self.runtime.store.record_attempt, delivery, self.owner, time.time(), outcome, status_code, error,
            next_attempt_at,
        )

    async def _attempt(self, delivery: DeliveryRow) -> tuple[str, int | None, str | None]:
        runtime = self.runtime
        if await asyncio.to_thread(runtime.store.url_disabled, delivery.url):
            return "disabled", None, "the URL answered 410 Gone earlier; deliveries to it are disabled"
        try:
            target = await runtime.policy.check("webhook_url", delivery.url)
        except OutboundRefused as exc:
            return "failed", None, exc.message
        body = delivery.payload.encode()
        headers = {
            **target.headers(),
            **runtime.signer.headers(delivery.id, int(time.time()), body),
            "content-type": "application/json",
            "user-agent": "whisper-jobs-webhook",
        }
        try:
            # One deadline for the whole attempt (httpx's timeouts are per read/write: a receiver trickling a byte at a
            # time would hold the outbox forever). Only the status is used; the reply's body is never read.
            async with asyncio.timeout(runtime.webhook_timeout):
                async with runtime.client.stream(
                    "POST", target.request_url(), content=body, headers=headers, extensions=target.extensions(),
                    timeout=runtime.webhook_timeout, follow_redirects=False,
                ) as response:
                    status = response.status_code
        except TimeoutError:
            return "retrying", None, f"no answer within {runtime.webhook_timeout:g} s (WEBHOOK_TIMEOUT_SECONDS)"
        except httpx.HTTPError as exc:
            return "retrying", None, f"{type(exc).__name__}"
        if 200 <= status < 300:
            return "delivered", status, None
        if status == 410:
            return "disabled", status, "410 Gone: deliveries to this URL are disabled"
        if transient_status(status):
            return "retrying", status, f"HTTP {status}"
        return "failed", status, f"HTTP {status} (not retried)"
