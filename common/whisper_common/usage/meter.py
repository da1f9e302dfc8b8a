"""Which owner and route the work under way belongs to, so that usage counted deep below (an inference's audio
seconds, in `ServiceMetrics.record_inference`) lands on the right owner without being handed down every call.

    UsageMiddleware(app, ledger)            # per request: one request counted, the context set while it runs
    with metered("team-a", "/v1/jobs"):     # a job's run, in the worker
        ...
    ledger.audio_of_inference(model, task, audio_seconds)   # record_inference's observer: the current context's owner
"""
from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from whisper_common.owners import OWNER_SCOPE_KEY, Owner
from whisper_common.usage.ledger import UsageLedger


@dataclass(slots=True)
class Metering:
    owner: str
    route: str | None = None
    scope: Scope | None = None

    @property
    def route_label(self) -> str:
        if self.route is not None:
            return self.route
        route = self.scope.get("route") if self.scope is not None else None
        return getattr(route, "path", None) or "unmatched"


_current: contextvars.ContextVar[Metering | None] = contextvars.ContextVar("metering", default=None)


@contextmanager
def metered(owner: str, route: str) -> Iterator[None]:
    token = _current.set(Metering(owner, route))
    try:
        yield
    finally:
        _current.reset(token)


def current_metering() -> Metering | None:
    return _current.get()


def inference_observer(ledger: UsageLedger):  # noqa: ANN201 - a ServiceMetrics observer
    def observe(model: str, task: str, audio_seconds: float) -> None:
        metering = _current.get()
        if metering is not None:
            ledger.audio(metering.owner, metering.route_label, model, audio_seconds)

    return observe


class UsageMiddleware:
    """One request counted per owner and route template, and the metering context set while it runs."""

    def __init__(self, app: ASGIApp, ledger: UsageLedger) -> None:
        self.app = app
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner: Owner | None = scope.get(OWNER_SCOPE_KEY)
        if owner is None:
            await self.app(scope, receive, send)
            return
        metering = Metering(owner.name, scope=scope)
        token = _current.set(metering)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)
            self.ledger.request(owner.name, metering.route_label)
