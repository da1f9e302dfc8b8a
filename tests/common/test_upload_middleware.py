"""UploadLimitMiddleware driven through ASGI directly: stalls, disconnects, cut multiparts and size, with a real
Starlette app reading the form behind it. (The probe checks the same against real servers over real sockets.)"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from whisper_common.errors import install_error_handlers
from whisper_common.uploads import UploadLimitMiddleware

BOUNDARY = b"b0undary"


async def _echo_form(request: Request) -> JSONResponse:
    form = await request.form()
    return JSONResponse({"fields": sorted(form.keys())})


def _app(read_timeout: float = 0.2, max_bytes: int = 10_000) -> UploadLimitMiddleware:
    inner = Starlette(routes=[Route("/upload", _echo_form, methods=["POST"])])
    install_error_handlers(inner)  # type: ignore[arg-type]  # Starlette app: the handlers need only add_exception_handler
    return UploadLimitMiddleware(inner, max_bytes=max_bytes, read_timeout=read_timeout)


def _scope(content_type: bytes = b"multipart/form-data; boundary=" + BOUNDARY) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/upload", "raw_path": b"/upload", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", content_type)], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }


def _part() -> bytes:
    return b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc\r\n'


async def _call(
    app: UploadLimitMiddleware, messages: list[dict[str, Any]], then: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[int, dict[str, str], dict[str, Any]]:
    queue = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else await then()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(_scope(), receive, send), timeout=10)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, json.loads(body)


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _disconnect() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def test_a_stalled_body_is_408_with_connection_close() -> None:
    status, headers, body = await _call(_app(), [{"type": "http.request", "body": _part(), "more_body": True}], _never)
    assert status == 408 and headers["connection"] == "close"
    assert body["error"]["code"] == "upload_timeout"


async def test_a_slow_body_that_keeps_coming_is_read_whole() -> None:
    pieces = [_part()[:10], _part()[10:], b"--" + BOUNDARY + b"--\r\n"]
    delivered = iter(pieces)

    async def slowly() -> dict[str, Any]:
        await asyncio.sleep(0.1)  # each pause under the 0.2 s timeout, 0.3 s in all
        piece = next(delivered)
        return {"type": "http.request", "body": piece, "more_body": piece is not pieces[-1]}

    status, _, body = await _call(_app(), [], slowly)
    assert status == 200 and body == {"fields": ["file"]}


async def test_a_client_gone_mid_body_is_499() -> None:
    status, _, body = await _call(_app(), [{"type": "http.request", "body": _part(), "more_body": True}], _disconnect)
    assert status == 499 and body["error"]["code"] == "client_disconnected"


async def test_a_multipart_without_its_closing_boundary_is_400() -> None:
    status, _, body = await _call(_app(), [{"type": "http.request", "body": _part(), "more_body": False}], _never)
    assert status == 400 and body["error"]["code"] == "incomplete_multipart"


async def test_a_complete_multipart_passes_and_an_oversized_one_is_413() -> None:
    whole = _part() + b"--" + BOUNDARY + b"--\r\n"
    status, _, body = await _call(_app(), [{"type": "http.request", "body": whole, "more_body": False}], _never)
    assert status == 200 and body == {"fields": ["file"]}
    status, _, body = await _call(_app(max_bytes=10), [{"type": "http.request", "body": whole, "more_body": False}], _never)
    assert status == 413 and body["error"]["code"] == "upload_too_large"
