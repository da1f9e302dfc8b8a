"""Per-owner quotas: requests at once, jobs at once, audio hours per UTC day. A key's own limits (keys file), else
the global defaults (QUOTA__*); 0 is no limit. Over a limit the answer is 429 at once, in OpenAI's shape, with
Retry-After: `rate_limit_exceeded` for requests or jobs at once, `insufficient_quota` for the day's audio.

    guard = QuotaGuard(settings.quota, ledger, retry_after=settings.retry_after_seconds)
    QuotaMiddleware(app, guard, metered_paths)      # transcriptions, translations, live sessions: held while they run
    guard.check_audio(owner); guard.check_jobs(owner, active)                    # a job's submission

An owner at its limit is refused before it takes an inference slot or a queue place, so it never delays another
owner's requests (with QUOTA__MAX_CONCURRENT_REQUESTS below MAX_CONCURRENCY, there is always a slot for someone
else). The daily audio is checked when work starts and counted when it ends: the request that crosses the limit
finishes, the next one is refused. Counts of requests at once are this process's.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Receive, Scope, Send

from whisper_common.auth import deny_websocket
from whisper_common.errors import ApiError, error_response
from whisper_common.owners import OWNER_SCOPE_KEY, Owner
from whisper_common.settings import QuotaSettings
from whisper_common.usage.ledger import UsageLedger


class RateLimitExceeded(ApiError):
    """Too many requests or jobs of one owner at once (429)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class InsufficientQuota(RateLimitExceeded):
    """The owner's audio hours for today are used up (429 until midnight UTC)."""

    error_type = "insufficient_quota"
    code = "insufficient_quota"


class QuotaGuard:
    def __init__(self, defaults: QuotaSettings, ledger: UsageLedger, retry_after: int = 5) -> None:
        self.defaults = defaults
        self.ledger = ledger
        self.retry_after = retry_after
        self._running: dict[str, int] = {}

    def _limit(self, own: float | None, default: float) -> float:
        return default if own is None else own

    def running(self, owner: Owner) -> int:
        return self._running.get(owner.name, 0)

    @contextmanager
    def hold(self, owner: Owner) -> Iterator[None]:
        """One of the owner's requests at once, for the block; RateLimitExceeded when it already runs its maximum."""
        limit = self._limit(owner.quota.max_concurrent_requests, self.defaults.max_concurrent_requests)
        running = self._running.get(owner.name, 0)
        if limit and running >= limit:
            raise RateLimitExceeded(
                f"'{owner.name}' already runs {running} requests, its limit at once; retry when one has finished",
                self.retry_after,
            )
        self._running[owner.name] = running + 1
        try:
            yield
        finally:
            left = self._running[owner.name] - 1
            if left:
                self._running[owner.name] = left
            else:
                del self._running[owner.name]

    def check_audio(self, owner: Owner) -> None:
        hours = self._limit(owner.quota.audio_hours_per_day, self.defaults.audio_hours_per_day)
        if hours and self.ledger.today_audio_seconds(owner.name) >= hours * 3600:
            raise InsufficientQuota(
                f"'{owner.name}' has used its {hours:g} hours of audio for today (UTC); more tomorrow",
                _seconds_to_midnight_utc(),
            )

    def check_jobs(self, owner: Owner, active: int) -> None:
        limit = self._limit(owner.quota.max_active_jobs, self.defaults.max_active_jobs)
        if limit and active >= limit:
            raise RateLimitExceeded(
                f"'{owner.name}' has {active} jobs queued or running, its limit; submit more when some have finished",
                self.retry_after,
            )

    def max_active_jobs(self, owner: Owner) -> int:
        return int(self._limit(owner.quota.max_active_jobs, self.defaults.max_active_jobs))


def _seconds_to_midnight_utc() -> int:
    return max(1, 86400 - int(time.time()) % 86400)


class QuotaMiddleware:
    """Holds the owner's quotas around the requests that run inferences: POSTs to `metered_paths`, and WebSockets
    to them (live sessions); a refused WebSocket is a refused handshake with the same 429."""

    def __init__(self, app: ASGIApp, guard: QuotaGuard, metered_paths: Iterable[str]) -> None:
        self.app = app
        self.guard = guard
        self.metered_paths = frozenset(metered_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner: Owner | None = scope.get(OWNER_SCOPE_KEY)
        if (
            owner is None
            or scope["path"] not in self.metered_paths
            or (scope["type"] == "http" and scope["method"] != "POST")
        ):
            await self.app(scope, receive, send)
            return
        try:
            self.guard.check_audio(owner)
            holding = self.guard.hold(owner)
            holding.__enter__()
        except ApiError as exc:
            if scope["type"] == "websocket":
                await deny_websocket(scope, receive, send, exc)
            else:
                await error_response(exc)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            holding.__exit__(None, None, None)
