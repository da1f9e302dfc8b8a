"""Usage per owner: requests, audio seconds and jobs, per route and model; Prometheus counters labelled by owner
and a persisted daily table for chargeback (`GET /v1/usage`) and the daily audio quota.

`create_service_app` makes the ledger (`app.state.usage`) and counts every authenticated request; a service opens the
table for its lifespan and serves the route:

    async with serve_usage(app, settings, service="whisper_faster"):   # the table opened, flushed every few seconds
        yield

`store` holds the table's queries, `ledger` the counting in memory, `meter` whose work is under way (so that an
inference's audio seconds land on its owner), `routes` the HTTP surface.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from whisper_common.db.janitor import every
from whisper_common.settings import ServiceSettings
from whisper_common.usage.ledger import UsageLedger
from whisper_common.usage.meter import metered
from whisper_common.usage.routes import usage_router
from whisper_common.usage.store import UsageStore, open_usage_store

logger = logging.getLogger("whisper_common.usage")

__all__ = ["UsageLedger", "UsageStore", "metered", "serve_usage", "usage_router"]


@contextlib.asynccontextmanager
async def serve_usage(app: FastAPI, settings: ServiceSettings) -> AsyncIterator[UsageLedger]:
    """Open the usage table, flush the ledger into it every USAGE_FLUSH_SECONDS, and once more at the end."""
    ledger: UsageLedger = app.state.usage
    store = await asyncio.to_thread(open_usage_store, settings)
    ledger.attach(store)
    try:
        await ledger.flush_now()
    except Exception as exc:  # noqa: BLE001 - counted again at the next flush
        logger.warning("reading usage failed", extra={"error": repr(exc)})
    flusher = asyncio.create_task(
        every(settings.usage_flush_seconds, ledger.flush, what="writing usage", logger=logger), name="usage-flush"
    )
    try:
        yield ledger
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        try:
            await ledger.flush_now()
        except Exception as exc:  # noqa: BLE001 - lost: at most USAGE_FLUSH_SECONDS of counts
            logger.warning("writing usage at shutdown failed", extra={"error": repr(exc)})
        ledger.store = None
        store.close()
