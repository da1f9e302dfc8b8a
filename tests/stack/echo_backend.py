"""A small real HTTP backend standing where the auto-start proxy sits, to see what Nginx forwards.

Run: python -m tests.stack.echo_backend <port>
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def echo(request: web.Request) -> web.Response:
    """What arrived: method, path, headers and the body size, read as a stream."""
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "headers": dict(request.headers),
            "body_bytes": received,
            "http_version": f"{request.version.major}.{request.version.minor}",
            "peer": list(request.transport.get_extra_info("peername") or []) if request.transport else [],
        }
    )


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events with a pause between them: buffering anywhere shows up as a late first event."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index in range(3):
        await response.write(f"data: event {index}\n\n".encode())
        await asyncio.sleep(1.0)
    await response.write_eof()
    return response


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "5")))
    return web.json_response({"slept": True})


async def drop(request: web.Request) -> web.Response:
    """Closes the connection without an answer, as a crashed upstream would."""
    assert request.transport is not None
    request.transport.abort()
    raise asyncio.CancelledError


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Echoes each text message back, to check that Nginx forwards the Upgrade."""
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        await socket.send_str(f"echo: {message.data}")
    return socket


def create_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_get("/health", health)
    app.router.add_get("/events", events)
    app.router.add_get("/slow", slow)
    app.router.add_get("/drop", drop)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None)
