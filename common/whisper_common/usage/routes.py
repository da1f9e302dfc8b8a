"""`GET /v1/usage`: the caller's usage (an admin's: everyone's, or one owner's), per day or in total, from the usage
table, for chargeback. What this process counted since its last flush is flushed first."""
from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from whisper_common.errors import InvalidParameter, NotFound
from whisper_common.owners import OWNER_NAME, owner_of
from whisper_common.usage.ledger import UsageLedger, utc_day

MAX_DAYS = 366
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


class UsageBucket(BaseModel):
    object: str = "usage.bucket"
    day: str | None = Field(description="`YYYY-MM-DD` (UTC); null with `group_by=total`.")
    owner: str
    route: str = Field(description="The route template (`/v1/audio/transcriptions`, `/v1/jobs`, `/v1/realtime`, ...).")
    model: str = Field(description="The model the audio was transcribed with; empty for requests counted by route.")
    requests: int
    audio_seconds: float
    jobs: int


class UsageTotals(BaseModel):
    requests: int
    audio_seconds: float
    jobs: int


class UsageList(BaseModel):
    object: str = "list"
    data: list[UsageBucket]
    from_: str = Field(alias="from")
    to: str
    group_by: str
    total: UsageTotals

    model_config = {"populate_by_name": True}


def _day(value: str | None, param: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:  # the pattern holds, the calendar does not (2025-02-30)
        raise InvalidParameter(param, f"'{param}' is not a date of the calendar: {value}") from None


def usage_router() -> APIRouter:
    router = APIRouter(tags=["usage"])

    @router.get(
        "/v1/usage",
        response_model=UsageList,
        response_model_by_alias=True,
        summary="Usage per owner, route and model: requests, audio seconds, jobs (per day or in total)",
        responses={404: {"description": "`owner` names another owner and the caller is not an admin"}},
    )
    async def get_usage(
        request: Request,
        from_: Annotated[str | None, Query(alias="from", pattern=DAY_PATTERN, json_schema_extra={"format": "date"},
                                           description="First day, YYYY-MM-DD (UTC); default: 30 days before `to`; "
                                           "at most 366 days before it.")] = None,
        to: Annotated[str | None, Query(pattern=DAY_PATTERN, json_schema_extra={"format": "date"},
                                        description="Last day, YYYY-MM-DD (UTC), included; default: today.")] = None,
        group_by: Annotated[Literal["day", "total"], Query(description="`day`: a bucket per day; `total`: one for the range.")] = "day",
        owner: Annotated[str | None, Query(pattern=f"^{OWNER_NAME.pattern}$", description="Admins: only this owner's usage.")] = None,
    ) -> UsageList:
        caller = owner_of(request)
        last = _day(to, "to") or date.fromisoformat(utc_day())
        first = _day(from_, "from") or last - timedelta(days=29)
        if first > last:
            raise InvalidParameter("from", "'from' is after 'to'")
        if (last - first).days >= MAX_DAYS:
            raise InvalidParameter("from", f"at most {MAX_DAYS} days at once")
        if owner is not None and not caller.sees(owner):
            raise NotFound(f"no owner '{owner[:64]}'", param="owner")
        ledger: UsageLedger = request.app.state.usage
        if ledger.store is None:
            raise InvalidParameter("usage", "usage is not available yet; the service is starting")
        await ledger.flush_now()
        rows = await asyncio.to_thread(ledger.store.rows, ledger.service, caller, first.isoformat(), last.isoformat(), owner)
        buckets: dict[tuple[str | None, str, str, str], UsageBucket] = {}
        for row in rows:
            key = (row.day if group_by == "day" else None, row.owner, row.route, row.model)
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = UsageBucket(day=key[0], owner=row.owner, route=row.route, model=row.model,
                                                    requests=0, audio_seconds=0.0, jobs=0)
            bucket.requests += row.requests
            bucket.audio_seconds = round(bucket.audio_seconds + row.audio_seconds, 3)
            bucket.jobs += row.jobs
        data = list(buckets.values())
        total = UsageTotals(requests=sum(b.requests for b in data),
                            audio_seconds=round(sum(b.audio_seconds for b in data), 3), jobs=sum(b.jobs for b in data))
        return UsageList(data=data, from_=first.isoformat(), to=last.isoformat(), group_by=group_by, total=total)

    return router
