"""API-key authentication: with keys configured, every route but `/health*` needs `Authorization: Bearer <key>`.

`create_service_app` installs `ApiKeyMiddleware(app, keys)`; it answers 401 with OpenAI's error JSON before the body is
read, compares keys in constant time and never logs them. `bearer_scheme` adds the "Authorize" button to Swagger UI.
"""
from __future__ import annotations

import hmac
from collections.abc import Iterable

from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from whisper_common.errors import Unauthorized, error_response

OPEN_PATH_PREFIXES: tuple[str, ...] = ("/health",)
bearer_scheme = HTTPBearer(auto_error=False, description="An API key from API_KEYS (only when API_KEYS is set).")


def key_matches(presented: str, keys: Iterable[bytes]) -> bool:
    """Constant-time comparison against every configured key (no early exit on the first match)."""
    presented_bytes = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented_bytes, key)
    return matched


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class ApiKeyMiddleware:
    """ASGI middleware: 401 unless the request carries one of `keys` (no-op when `keys` is empty)."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], open_prefixes: tuple[str, ...] = OPEN_PATH_PREFIXES) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys if key]
        self.open_prefixes = open_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.keys
            or scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or scope["path"].startswith(self.open_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None or not key_matches(token, self.keys):
            await error_response(Unauthorized())(scope, receive, send)
            return
        await self.app(scope, receive, send)
