"""What a service is busy with besides HTTP requests, for whoever decides to stop it (the auto-start proxy).

`GET /health/activity` (open like every `/health*` route) answers

    {"busy": true, "counts": {"jobs_queued": 2, "jobs_running": 1, "realtime_sessions": 0}}

`busy` is true while any count is above zero. Components register a named counter on `app.state.activity`:

    app.state.activity.register("jobs_running", lambda: store.count_running())

The proxy (autostart, `activityPath`) asks this route before an idle stop and postpones the stop while `busy` is true.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

logger = logging.getLogger("whisper_common.activity")

ACTIVITY_PATH = "/health/activity"
Counter = Callable[[], int]


class Activity(BaseModel):
    busy: bool = Field(description="True while any count is above zero: the service must not be stopped.")
    counts: dict[str, int] = Field(description="Each registered activity and how many are under way now.")


class ActivityRegistry:
    """Named counters of work under way; a counter that fails counts as busy (stopping on an error loses work)."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}

    def register(self, name: str, counter: Counter) -> None:
        self._counters[name] = counter

    def snapshot(self) -> Activity:
        counts: dict[str, int] = {}
        for name, counter in self._counters.items():
            try:
                counts[name] = int(counter())
            except Exception as exc:  # noqa: BLE001 - reported, and treated as busy
                logger.warning("activity counter failed", extra={"counter": name, "error": repr(exc)})
                counts[name] = 1
        return Activity(busy=any(value > 0 for value in counts.values()), counts=counts)


def activity_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(ACTIVITY_PATH, summary="Work under way (jobs, realtime sessions)", response_model=Activity)
    async def activity(request: Request) -> Activity:
        registry: ActivityRegistry = request.app.state.activity
        return registry.snapshot()

    return router
