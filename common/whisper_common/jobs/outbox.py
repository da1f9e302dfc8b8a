"""The webhook outbox: deliveries written with the finished job (same transaction) are sent here, at least once.

Each delivery keeps its `webhook-id` and body across retries (receivers deduplicate by id). 2xx delivers; timeouts,
connection errors, 5xx and 429 are retried with exponential backoff and jitter up to WEBHOOK_MAX_ATTEMPTS; any other
status (3xx included: webhooks do not follow redirects) fails without retry; 410 Gone also disables the URL for the
job owner's later deliveries (until it re-enables it: `DELETE /v1/webhooks/disabled/{id}`). Every attempt is recorded
on the job.

Up to WEBHOOK_CONCURRENCY deliveries go out at once, never two to one receiver (scheme, host and port): a receiver
that answers slowly, or not at all until the timeout, holds up its own deliveries only.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import httpx

from whisper_common.jobs.context import JobsContext
from whisper_common.jobs.errors import OutboundRefused
from whisper_common.jobs.records import DeliveryRow
from whisper_common.jobs.outbound import transient_status

if TYPE_CHECKING:
    from whisper_common.jobs.runner import Wakeups

logger = logging.getLogger("whisper_common.jobs.webhooks")


class Outbox:
    def __init__(self, context: JobsContext, holder: str, wakeups: Wakeups) -> None:
        self.context = context
        self.store = context.store
        self.holder = holder
        self.wakeups = wakeups

    async def run_forever(self) -> None:
        lease = self.context.timings.delivery_lease_seconds
        limit = self.context.webhook_concurrency
        sending: dict[str, asyncio.Task[None]] = {}  # receiver -> its delivery under way
        try:
            while True:
                if len(sending) >= limit:
                    await asyncio.wait(sending.values(), return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    delivery = await asyncio.to_thread(
                        self.store.claim_delivery, self.holder, time.time(), lease, tuple(sending)
                    )
                except Exception as exc:  # noqa: BLE001 - keep trying while the database is away
                    logger.warning("claiming a webhook delivery failed", extra={"error": repr(exc)})
                    delivery = None
                if delivery is None:
                    await self.wakeups.wait_for_deliveries()
                    continue
                receiver = delivery.receiver or delivery.url
                task = asyncio.create_task(self._deliver_one(delivery), name=f"webhook {delivery.id}")
                sending[receiver] = task
                task.add_done_callback(lambda _, receiver=receiver: self._sent(sending, receiver))
        finally:
            for task in sending.values():  # shutting down: their leases expire and they are sent again
                task.cancel()
            if sending:
                await asyncio.gather(*sending.values(), return_exceptions=True)

    def _sent(self, sending: dict[str, asyncio.Task[None]], receiver: str) -> None:
        sending.pop(receiver, None)
        self.wakeups.deliveries_due()  # the receiver's next delivery, if one is due

    async def _deliver_one(self, delivery: DeliveryRow) -> None:
        try:
            await self.deliver(delivery)
        except Exception as exc:  # noqa: BLE001 - the delivery's lease expires and it is sent again
            logger.error("webhook delivery could not be recorded", extra={"webhook_id": delivery.id}, exc_info=exc)
            await asyncio.sleep(self.context.timings.poll_seconds)

    async def deliver(self, delivery: DeliveryRow) -> None:
        outcome, status_code, error = await self._attempt(delivery)
        attempt = delivery.attempts + 1
        next_attempt_at = None
        if outcome == "retrying":
            retry = self.context.retry
            if retry.webhook_gives_up(attempt):
                outcome = "failed"
                error = f"{error}; gave up after {attempt} attempts"
            else:
                next_attempt_at = time.time() + retry.backoff.delay(attempt)
        self.context.metrics.webhook_deliveries.labels(outcome=outcome).inc()
        logger.info(
            "webhook attempt",
            extra={"job_id": delivery.job_id, "webhook_id": delivery.id, "attempt": attempt, "outcome": outcome,
                   "status_code": status_code},
        )
        await asyncio.to_thread(
            self.store.record_attempt, delivery, self.holder, time.time(), outcome, status_code, error,
            next_attempt_at,
        )

    async def _attempt(self, delivery: DeliveryRow) -> tuple[str, int | None, str | None]:
        context = self.context
        owner = await asyncio.to_thread(self.store.job_owner, delivery.job_id)
        if await asyncio.to_thread(self.store.url_disabled, owner or "", delivery.url):
            return "disabled", None, "the URL answered 410 Gone earlier; deliveries to it are disabled"
        try:
            target = await context.outbound.check("webhook_url", delivery.url)
        except OutboundRefused as exc:
            return "failed", None, exc.message
        body = delivery.payload.encode()
        headers = {
            **target.headers(),
            **context.signer.headers(delivery.id, int(time.time()), body),
            "content-type": "application/json",
            "user-agent": "whisper-jobs-webhook",
        }
        timeout = context.timings.webhook_timeout_seconds
        try:
            # One deadline for the whole attempt (httpx's timeouts are per read/write: a receiver trickling a byte at a
            # time would hold the outbox forever). Only the status is used; the reply's body is never read.
            async with asyncio.timeout(timeout):
                async with context.client.stream(
                    "POST", target.request_url(), content=body, headers=headers, extensions=target.extensions(),
                    timeout=timeout, follow_redirects=False,
                ) as response:
                    status = response.status_code
        except TimeoutError:
            return "retrying", None, f"no answer within {timeout:g} s (WEBHOOK_TIMEOUT_SECONDS)"
        except httpx.HTTPError as exc:
            return "retrying", None, f"{type(exc).__name__}"
        if 200 <= status < 300:
            return "delivered", status, None
        if status == 410:
            return "disabled", status, "410 Gone: deliveries to this URL are disabled"
        if transient_status(status):
            return "retrying", status, f"HTTP {status}"
        return "failed", status, f"HTTP {status} (not retried)"
