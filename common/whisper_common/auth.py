"""Who is calling, resolved once at the edge of a service: every route but `/health*` (and the open pages) gets the
caller's `Owner` in its scope (`owners.owner_of(request)`), or the request is answered 401 before its body is read.

`create_service_app` installs `OwnerMiddleware(app, resolver, open_prefixes)`. The caller is, in this order:
- the owner of an API key: `Authorization: Bearer <key>`, or (browsers cannot set headers on a WebSocket) OpenAI's
  subprotocol `openai-insecure-api-key.<key>`; checked against API_KEYS and API_KEYS_FILE (`keys.KeyRing`, constant
  time, never logged); a wrong key is a 401 whatever else the request carries;
- an edge user: the user Nginx (or an ingress) authenticated, named in EDGE_USER_HEADER, believed only from an address
  in TRUSTED_PROXIES (the proxy in front always overwrites the header, so a client cannot set it);
- `ANONYMOUS` (an admin) when no authentication is configured at all, as before owners existed.
Anything else is a 401. When Nginx let a request through without basic auth because it carries an API key, it says
so (`X-Whisper-Edge-Auth: api-key`, always overwritten there): such a request needs a valid key here even on a
service without keys, so a site that accepts keys at the edge can never open a service that checks none.

A refused WebSocket handshake gets the same 401 JSON where the server can send one, and is logged below ERROR.
`bearer_scheme` adds the "Authorize" button to Swagger UI.
"""
from __future__ import annotations

import contextvars
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from whisper_common.errors import ApiError, Unauthorized, error_response
from whisper_common.keys.ring import KeyRing
from whisper_common.owners import ANONYMOUS, OWNER_SCOPE_KEY, Owner, Role, valid_owner_name

OPEN_PATH_PREFIXES: tuple[str, ...] = ("/health",)
API_KEY_SUBPROTOCOL = "openai-insecure-api-key."
EDGE_AUTH_HEADER = b"x-whisper-edge-auth"
"""Set by Nginx on every request it proxies: `basic` (it checked a password) or `api-key` (it left the key to us)."""
bearer_scheme = HTTPBearer(auto_error=False, description="An API key (API_KEYS or API_KEYS_FILE), when keys are set.")

logger = logging.getLogger("whisper_common.auth")
_handshake_denied: contextvars.ContextVar[bool] = contextvars.ContextVar("handshake_denied", default=False)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CACHED = 10_000
"""Edge users' Owner values and peer addresses' trust, remembered (cleared when this many)."""


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


class EdgeUserRefused(Unauthorized):
    code = "invalid_edge_user"


class KeyRequired(Unauthorized):
    """The edge passed the request on for its API key, and there is none (or this service checks none)."""

    default_message = "this request must carry a valid API key: send 'Authorization: Bearer <key>'"


@dataclass
class OwnerResolver:
    keys: KeyRing
    trusted_proxies: Sequence[Network] = ()
    edge_user_header: bytes = b"x-whisper-user"
    edge_admins: frozenset[str] = frozenset()
    _edge_owners: dict[str, Owner] = field(default_factory=dict)
    _trusted_hosts: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def build(
        cls, keys: KeyRing, trusted_proxies: Iterable[str] = (), edge_user_header: str = "X-Whisper-User",
        edge_admins: Iterable[str] = (),
    ) -> OwnerResolver:
        networks = [ipaddress.ip_network(entry.strip(), strict=False) for entry in trusted_proxies if entry.strip()]
        return cls(keys, networks, edge_user_header.lower().encode("latin-1"), frozenset(edge_admins))

    @property
    def required(self) -> bool:
        return self.keys.configured or bool(self.trusted_proxies)

    def resolve(self, scope: Scope) -> Owner:
        """The caller, or an Unauthorized naming what is missing."""
        token = bearer_token(scope)
        edge_user: str | None = None
        edge_auth: bytes | None = None
        for name, value in scope.get("headers", ()):
            if name == self.edge_user_header:
                edge_user = value.decode("latin-1")
            elif name == EDGE_AUTH_HEADER:
                edge_auth = value
        if token is not None and (self.keys.configured or edge_auth == b"api-key"):
            owner = self.keys.lookup(token) if self.keys.configured else None
            if owner is None:
                raise Unauthorized()
            return owner
        if edge_user and self.trusted_proxies and self._from_trusted_proxy(scope):
            return self._edge_owner(edge_user)
        if edge_auth == b"api-key":
            raise KeyRequired()
        if self.required:
            raise Unauthorized()
        return ANONYMOUS

    def _edge_owner(self, name: str) -> Owner:
        owner = self._edge_owners.get(name)
        if owner is None:
            if not valid_owner_name(name):
                raise EdgeUserRefused(
                    "the user name the proxy in front authenticated cannot name an owner here (1 to 64 of A-Z a-z 0-9 "
                    ". _ @ -, starting with a letter or digit)"
                )
            if len(self._edge_owners) >= CACHED:
                self._edge_owners.clear()
            owner = self._edge_owners[name] = Owner(
                name, Role.ADMIN if name in self.edge_admins else Role.USER, source="edge"
            )
        return owner

    def _from_trusted_proxy(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        trusted = self._trusted_hosts.get(client[0])
        if trusted is None:
            try:
                address = ipaddress.ip_address(client[0])
            except ValueError:
                trusted = False
            else:
                trusted = any(address in network for network in self.trusted_proxies)
            if len(self._trusted_hosts) >= CACHED:
                self._trusted_hosts.clear()
            self._trusted_hosts[client[0]] = trusted
        return trusted


class OwnerMiddleware:
    """ASGI middleware: the caller's Owner into the scope, or 401 (HTTP JSON, or a refused WebSocket handshake)."""

    def __init__(self, app: ASGIApp, resolver: OwnerResolver, open_prefixes: tuple[str, ...] = OPEN_PATH_PREFIXES) -> None:
        self.app = app
        self.resolver = resolver
        self.open_prefixes = open_prefixes
        quiet_denied_handshakes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope.get("method") == "OPTIONS" or scope["path"].startswith(self.open_prefixes):
            await self.app(scope, receive, send)
            return
        try:
            scope[OWNER_SCOPE_KEY] = self.resolver.resolve(scope)
        except ApiError as exc:
            if kind == "websocket":
                await deny_websocket(scope, receive, send, exc)
            else:
                await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def deny_websocket(scope: Scope, receive: Receive, send: Send, exc: ApiError) -> None:
    """Refuse a handshake with `exc`'s status and JSON body when the server supports denial responses (uvicorn does),
    else close 1008. uvicorn logs an ERROR for a refusal answered this way ("ASGI callable returned without
    completing handshake"): anyone could write error lines at will, so it is dropped for these (the refusal is in
    uvicorn's own INFO line)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    _handshake_denied.set(True)
    if "websocket.http.response" in scope.get("extensions", {}):
        response = error_response(exc)
        await send({"type": "websocket.http.response.start", "status": response.status_code,
                    "headers": response.raw_headers})
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})


class _DeniedHandshakeFilter(logging.Filter):
    MESSAGE = "ASGI callable returned without completing handshake"

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_handshake_denied.get() and record.getMessage().startswith(self.MESSAGE))


def quiet_denied_handshakes() -> None:
    """Install the filter on uvicorn's error logger (once)."""
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _DeniedHandshakeFilter) for existing in uvicorn_errors.filters):
        uvicorn_errors.addFilter(_DeniedHandshakeFilter())
