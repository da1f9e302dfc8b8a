"""A small real ASGI backend for the proxy tests: `uvicorn tests.autostart.backend_app:app`.

Routes: /health, /echo (method, path, query, headers, body size), /slow?seconds=, /sse?count=&interval=,
/upload (counts streamed body bytes without keeping them), /ws (WebSocket echo), /big?bytes=.
/record?tag=&seconds= appends `tag` to the file BACKEND_RECORD (each time the handler runs), then sleeps;
/busy?jobs=N sets what /health/activity reports (the activity contract of whisper_common.activity).
Env BACKEND_NAME names it in answers; BACKEND_START_DELAY delays start-up (a slow model load);
BACKEND_HEALTH=never makes /health answer 503 for ever; BACKEND_HEALTH=failed makes it answer 503 `"status": "failed"`
with a reason (a service whose model cannot be loaded); BACKEND_LOADING_SECONDS makes it answer 503 with an
advancing `progress` for that long (a model download); BACKEND_PID_FILE gets a line with each process's pid.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from urllib.parse import parse_qs

NAME = os.environ.get("BACKEND_NAME", "backend")
STARTED = time.time()
NEVER_HEALTHY = os.environ.get("BACKEND_HEALTH") == "never"
FAILED = os.environ.get("BACKEND_HEALTH") == "failed"
FAILURE = "preload failed: model 'large-v3' not found: not in the local Hugging Face cache"
LOADING_SECONDS = float(os.environ.get("BACKEND_LOADING_SECONDS", "0"))
RECORD = os.environ.get("BACKEND_RECORD")
JOBS = {"running": 0}
if os.environ.get("BACKEND_PID_FILE"):
    with open(os.environ["BACKEND_PID_FILE"], "a") as pid_file:
        pid_file.write(f"{os.getpid()}\n")
Scope = dict
Receive = object
Send = object


async def _send_json(send, status: int, body: object, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


async def _drain(receive) -> int:
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return total
        total += len(message.get("body", b""))
        if not message.get("more_body"):
            return total


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(float(os.environ.get("BACKEND_START_DELAY", "0")))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    path = scope["path"]
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/health":
        loading = time.time() - STARTED
        if NEVER_HEALTHY:
            await _send_json(send, 503, {"status": "not_ready", "name": NAME})
        elif FAILED:
            await _send_json(send, 503, {"status": "failed", "error": {"message": FAILURE, "code": "start_failed"}})
        elif loading < LOADING_SECONDS:
            await _send_json(send, 503, {"status": "not_ready", "progress": {"cacheBytes": int(loading * 1000)}})
        else:
            await _send_json(send, 200, {"status": "ok", "name": NAME})
    elif path == "/health/activity":
        await _send_json(send, 200, {"busy": JOBS["running"] > 0, "counts": {"jobs_running": JOBS["running"]}})
    elif path == "/busy":
        JOBS["running"] = int(query.get("jobs", "0"))
        await _send_json(send, 200, {"jobs_running": JOBS["running"]})
    elif path == "/record":
        await _drain(receive)
        if RECORD:
            with open(RECORD, "a") as record:
                record.write(query.get("tag", "") + "\n")
        await asyncio.sleep(float(query.get("seconds", "30")))
        await _send_json(send, 200, {"name": NAME, "tag": query.get("tag", "")})
    elif path == "/echo":
        size = await _drain(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        await _send_json(send, 200, {"name": NAME, "method": scope["method"], "path": path,
                                     "query": scope["query_string"].decode(), "headers": headers, "bodyBytes": size,
                                     "pid": os.getpid()})
    elif path == "/slow":
        await _drain(receive)
        await asyncio.sleep(float(query.get("seconds", "1")))
        await _send_json(send, 200, {"name": NAME, "slept": float(query.get("seconds", "1"))})
    elif path == "/upload":
        size = await _drain(receive)
        await _send_json(send, 200, {"name": NAME, "bodyBytes": size})
    elif path == "/sse":
        await _drain(receive)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        count, interval = int(query.get("count", "3")), float(query.get("interval", "0.5"))
        for index in range(count):
            event = f"data: {json.dumps({'index': index, 'sentAt': time.time()})}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await asyncio.sleep(interval)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
    elif path == "/big":
        await _drain(receive)
        size = int(query.get("bytes", "1000000"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            part = chunk[: min(len(chunk), size - sent)]
            sent += len(part)
            await send({"type": "http.response.body", "body": part, "more_body": sent < size})
    elif path == "/close":
        os._exit(3)  # a backend that dies mid-request: the proxy must answer 502
    else:
        await _drain(receive)
        await _send_json(send, 404, {"error": "not found", "path": path})


async def _websocket(scope, receive, send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    subprotocols = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": subprotocols[0] if subprotocols else None})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            if message["text"] == "close":
                await send({"type": "websocket.close", "code": 4001})
                return
            await send({"type": "websocket.send", "text": f"echo: {message['text']}"})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
