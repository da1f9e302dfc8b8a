"""Structured logs: one JSON object per line, on stderr (journald under systemd) or in a file of the proxy's own
(`--log-file`, the background process of `make up`), rotated by size: the file and at most `backups` older ones of
`max_bytes` each, so the log never holds more than (backups + 1) × max_bytes. Fields come from `extra=`; nothing
secret is ever passed in (no header values except User-Agent, no query strings)."""
from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path

_STANDARD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "info", file: Path | None = None, max_bytes: int = 10 * 2**20, backups: int = 5) -> None:
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups,
                                                       encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logging.captureWarnings(True)  # warnings go to the same place, not to a stderr nobody reads
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log is replaced by ours (off on the fast path unless accessLog is set).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
