"""Structured logging: one JSON object per line, each naming the request it belongs to.

    configure_logging("info")                       # once, before uvicorn starts (uvicorn_log_config() for uvicorn)
    logger.info("transcribed", extra={"model": "tiny.en", "audio_seconds": 11.0})

`RequestContextMiddleware` takes `X-Request-ID` from the request (or makes one), returns it on the response, puts it
in every log line written while the request runs, logs one access line per request (method, path, status, ms; never
headers, query strings or bodies, so keys and tokens never reach the log) and counts requests in the metrics.
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whisper_common.metrics import ServiceMetrics

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access_logger = logging.getLogger("whisper_common.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, request_id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for the root logger (and so for uvicorn, faster-whisper and ours)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def uvicorn_log_config(level: str = "info") -> dict[str, Any]:
    """A uvicorn `log_config` that sends its loggers through the JSON root handler; its access log is off (ours is
    RequestContextMiddleware's, which carries the request id)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "filters": {"refusal_told": {"()": f"{__name__}.RefusalToldFilter"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level.upper(), "handlers": [], "propagate": True, "filters": ["refusal_told"]},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }


class RefusalToldFilter(logging.Filter):
    """Drops uvicorn's copy of a start-up refusal the service has already told in one line (a database it will not
    run on: `refusing to start: …` from whisper_common.db): uvicorn would add the whole traceback as a second record."""

    TOLD = ("whisper_common.db.errors.", "SchemaTooNew:", "ForeignDatabase:", "CorruptDatabase:", "DatabaseRefused:")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Traceback") and any(mark in message for mark in self.TOLD))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """ASGI middleware: request id in and out, one access log line, request metrics by route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()
        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(route=route_label, method=scope["method"], status=str(status)).inc()
            self.metrics.request_seconds.labels(route=route_label).observe(elapsed)
            access_logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record()  # before the last byte leaves, so a client that reads /metrics next sees this request
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            record()
            request_id_var.reset(token)


def current_request_id() -> str | None:
    return request_id_var.get()
