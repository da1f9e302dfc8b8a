"""`run_service(settings, create_app)`: a service's `python -m` entry point, uvicorn on UVICORN_HOST:UVICORN_PORT."""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from whisper_common.http_protocol import json_error_http_protocol
from whisper_common.log import configure_logging, uvicorn_log_config
from whisper_common.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)
logger = logging.getLogger("whisper_common.run")
WS_MAX_BYTES = 24 * 2**20
"""Largest WebSocket message: a realtime append of 15 MiB of audio is 20 MiB as base64 JSON; it must arrive whole so
the service can answer it with an `error` event instead of a dropped connection."""


def run_service(settings: S, create_app: Callable[[S], FastAPI]) -> None:
    """Serve with JSON logs (the JSON access log comes from the app's own middleware, not uvicorn's) and JSON errors
    even for requests that are not valid HTTP."""
    configure_logging(settings.log_level)
    check_data_dir(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.uvicorn_host,
        port=settings.uvicorn_port,
        log_config=uvicorn_log_config(settings.log_level),
        access_log=False,
        http=json_error_http_protocol(),
        timeout_graceful_shutdown=10,
        ws_max_size=WS_MAX_BYTES,
    )


def check_data_dir(settings: ServiceSettings) -> None:
    """Jobs and realtime sessions persist under DATA_DIR: a directory the service cannot write (a read-only root
    filesystem without the data volume, wrong ownership) stops the start with one clear line, not a traceback later."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.data_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        logger.error("DATA_DIR is not writable", extra={"data_dir": str(settings.data_dir), "reason": reason})
        raise SystemExit(
            f"DATA_DIR {settings.data_dir} is not writable ({reason}): mount a writable volume there or set DATA_DIR"
        ) from None
