"""Erasure of an owner's data: `DELETE /v1/owners/me/data` (the caller's own) and `DELETE /v1/owners/{owner}/data`
(an admin, for anyone). Every store that keeps an owner's data registers how to remove it, so that a store added
later (the transcript index, voiceprints) is erased with the rest:

    app.state.erasure.register("jobs", jobs_service.erase_owner)    # async (owner name) -> how many removed

What is kept: the aggregate usage (`GET /v1/usage`: counts per day, route and model, no content).
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from whisper_common.errors import NotFound
from whisper_common.owners import OWNER_NAME, owner_of

logger = logging.getLogger("whisper_common.erasure")

Eraser = Callable[[str], Awaitable[int]]


class Erasure:
    def __init__(self) -> None:
        self._erasers: dict[str, Eraser] = {}

    def register(self, what: str, eraser: Eraser) -> None:
        self._erasers[what] = eraser

    def unregister(self, what: str) -> None:
        self._erasers.pop(what, None)

    async def erase(self, owner: str) -> dict[str, int]:
        """Remove everything `owner` has stored here; returns what each store removed."""
        removed = {what: await eraser(owner) for what, eraser in self._erasers.items()}
        logger.info("owner data erased", extra={"owner": owner, "removed": removed})
        return removed


class Erased(BaseModel):
    object: str = "owner.data.deleted"
    owner: str
    deleted: bool = True
    removed: dict[str, int] = Field(description="What each store removed (`jobs`, `realtime_sessions`, ...).")


def erasure_router() -> APIRouter:
    router = APIRouter(prefix="/v1/owners", tags=["owners"])

    @router.delete("/me/data", response_model=Erased,
                   summary="Delete everything the caller has stored: jobs, their audio and results, live sessions")
    async def erase_mine(request: Request) -> Erased:
        owner = owner_of(request)
        return Erased(owner=owner.name, removed=await request.app.state.erasure.erase(owner.name))

    @router.delete("/{owner}/data", response_model=Erased, responses={404: {"description": "Not an admin"}},
                   summary="Admins: delete everything an owner has stored")
    async def erase_owner(
        request: Request, owner: Annotated[str, Path(max_length=64, description="The owner's name.")]
    ) -> Erased:
        caller = owner_of(request)
        if not caller.is_admin and owner != caller.name:
            raise NotFound(f"no owner '{owner[:64]}'", param="owner")
        if not OWNER_NAME.fullmatch(owner):
            raise NotFound(f"no owner '{owner[:64]}'", param="owner")
        return Erased(owner=owner, removed=await request.app.state.erasure.erase(owner))

    return router
