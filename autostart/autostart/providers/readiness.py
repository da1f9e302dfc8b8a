"""The default readiness probe: TCP connect to the service's port, then `GET healthPath` answering 2xx.

A service that is not ready yet may say how far its start has got: a JSON body with a `progress` member
(any JSON value, e.g. `{"cacheBytes": 123456}` while a model downloads). The probe hands it back; the state
machine keeps waiting past startTimeout while it changes (see lifecycle.py).

A service that knows it will not become ready (its model cannot be loaded) says so with `"status": "failed"` and
the reason in `error.message` (or `reason`); the providers turn that into ServiceFailed at once, so waiting callers
hear why within a probe interval instead of after startTimeout.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from ..errors import ServiceFailed

PROBE_TIMEOUT = 2.0
MAX_PROBE_BODY = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class Health:
    ready: bool
    progress: Any = None  # the `progress` member of a not-ready answer's JSON body, when it has one
    failed: str | None = None  # the reason, when the service says it cannot become ready ("status": "failed")

    def raise_if_failed(self, service: str) -> None:
        if self.failed is not None:
            raise ServiceFailed(service, self.failed)


async def port_open(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


async def fetch(host: str, port: int, path: str, timeout: float = PROBE_TIMEOUT) -> Answer | None:
    """`GET path` on one fresh connection; the status and (up to 64 KiB of) the body, or None when the service
    cannot be reached, answers something that is not HTTP, or sends no complete head within `timeout`."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                host_header = f"[{host}]" if ":" in host else host
                # HTTP/1.0: the answer is never chunked, and ends with the connection or its Content-Length.
                writer.write(
                    f"GET {path} HTTP/1.0\r\nHost: {host_header}:{port}\r\nUser-Agent: autostart-probe\r\n"
                    "Accept: application/json\r\n\r\n".encode("latin-1")
                )
                await writer.drain()
                while len(data) < MAX_PROBE_BODY and not _complete(data):
                    more = await reader.read(MAX_PROBE_BODY - len(data))
                    if not more:
                        break
                    data += more
            finally:
                writer.close()
    except (OSError, UnicodeError):
        return None
    except asyncio.TimeoutError:
        if b"\r\n\r\n" not in data:
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or len(parts[1]) != 3 or not parts[1].isdigit():
        return None
    return Answer(int(parts[1]), body)


def _complete(data: bytes) -> bool:
    """Whether `data` holds a whole answer whose length the head states (else it ends with the connection)."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
    return False


def json_body(answer: Answer) -> Any:
    try:
        return json.loads(answer.body)
    except ValueError:
        return None


async def http_health(host: str, port: int, path: str, timeout: float = PROBE_TIMEOUT) -> Health:
    answer = await fetch(host, port, path, timeout)
    if answer is None:
        return Health(False)
    if 200 <= answer.status < 300:
        return Health(True)
    body = json_body(answer)
    if not isinstance(body, dict):
        return Health(False)
    return Health(False, body.get("progress"), _failure(body))


def _failure(body: dict[str, Any]) -> str | None:
    """The reason of a `"status": "failed"` answer (error.message, else reason), else None."""
    if body.get("status") != "failed":
        return None
    error = body.get("error")
    reason = error.get("message") if isinstance(error, dict) else None
    reason = reason if isinstance(reason, str) else body.get("reason")
    text = reason if isinstance(reason, str) and reason.strip() else "the service reported that it cannot start"
    return text[:MAX_REASON_CHARS]


async def http_healthy(host: str, port: int, path: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when the port accepts a connection and `GET path` answers with a 2xx status."""
    return (await http_health(host, port, path, timeout)).ready
