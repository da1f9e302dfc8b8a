"""API-key authentication: with keys configured, every route but `/health*` needs `Authorization: Bearer <key>`.

`create_service_app` installs `ApiKeyMiddleware(app, keys)`; it answers 401 with OpenAI's error JSON before the body is
read, compares keys in constant time and never logs them. `bearer_scheme` adds the "Authorize" button to Swagger UI.
WebSocket handshakes need a key too: the same header, or (browsers cannot set headers on a WebSocket) OpenAI's
subprotocol `openai-insecure-api-key.<key>`; a refused handshake gets the same 401 JSON where the server can send one.
"""
from __future__ import annotations

import hmac
from collections.abc import Iterable

from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from whisper_common.errors import Unauthorized, error_response

OPEN_PATH_PREFIXES: tuple[str, ...] = ("/health",)
API_KEY_SUBPROTOCOL = "openai-insecure-api-key."
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
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    if scope["type"] == "websocket":
        for protocol in scope.get("subprotocols", ()):
            if protocol.startswith(API_KEY_SUBPROTOCOL) and len(protocol) > len(API_KEY_SUBPROTOCOL):
                return protocol[len(API_KEY_SUBPROTOCOL):]
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
            or scope["type"] not in ("http", "websocket")
            or scope.get("method") == "OPTIONS"
            or scope["path"].startswith(self.open_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None or not key_matches(token, self.keys):
            if scope["type"] == "websocket":
                await _deny_websocket(scope, receive, send)
            else:
                await error_response(Unauthorized())(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _deny_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """401 with the JSON body when the server supports denial responses (uvicorn does), else close 1008."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        response = error_response(Unauthorized())
        await send({"type": "websocket.http.response.start", "status": response.status_code,
                    "headers": response.raw_headers})
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": "missing or invalid API key"})
