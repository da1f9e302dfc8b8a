"""Periodic cleanup of a store (expired rows, retention): `every(interval, step)` runs `step` now and then every
`interval` seconds until its task is canceled; a blocking `step` runs in a worker thread, a failed round is logged and
the next one tries again.

    janitor = asyncio.create_task(every(3600, lambda: store.remove_ended_before(time.time() - retention),
                                        what="removing old realtime sessions", logger=logger))
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any


async def every(
    interval: float, step: Callable[[], Any] | Callable[[], Awaitable[Any]], *, what: str, logger: logging.Logger
) -> None:
    while True:
        try:
            if inspect.iscoroutinefunction(step):
                await step()
            else:
                await asyncio.to_thread(step)
        except Exception as exc:  # noqa: BLE001 - the database may be away for a while; next round
            logger.warning(f"{what} failed", extra={"error": repr(exc)})
        await asyncio.sleep(interval)
