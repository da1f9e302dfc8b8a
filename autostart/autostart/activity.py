"""Asks a service, before an idle stop, whether it is busy with work that is not an HTTP request in flight.

`GET activityPath` (default `/health/activity`) answering `{"busy": true, "counts": {"jobs_running": 1, ...}}`
postpones the stop. Anything else (404 from a service without the route, an error, no answer within the probe's
timeout, `busy: false`) lets the stop go ahead, as it did before the route existed.
"""
from __future__ import annotations

from .providers.readiness import PROBE_TIMEOUT, fetch, json_body


class HttpActivity:
    def __init__(self, host: str, port: int, path: str, timeout: float = PROBE_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.timeout = timeout

    async def busy(self) -> str | None:
        answer = await fetch(self.host, self.port, self.path, self.timeout)
        if answer is None or answer.status != 200:
            return None
        body = json_body(answer)
        if not isinstance(body, dict) or body.get("busy") is not True:
            return None
        counts = body.get("counts")
        if isinstance(counts, dict):
            under_way = [f"{name}={value}" for name, value in counts.items() if isinstance(value, int) and value > 0]
            if under_way:
                return "busy: " + ", ".join(under_way)
        return "busy"
