"""uvicorn's HTTP protocol, answering requests it cannot parse with OpenAI's error JSON instead of plain text.

    uvicorn.run(app, http=json_error_http_protocol())     # run_service does this

A request line or header block that is not valid HTTP (`Content-Length: abc`, `-1`, Content-Length together with
Transfer-Encoding, duplicate Content-Length, a garbage method) never reaches the app: uvicorn answers it from the
protocol with `400 text/plain "Invalid HTTP request received."` and closes. These subclasses give the same status and
connection close with `{"error": {..., "code": "invalid_http"}}`, naming what the parser rejected (httptools says,
for example, "Invalid character in Content-Length").
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from whisper_common.errors import error_body

INVALID_HTTP_CODE = "invalid_http"


def invalid_http_body(detail: str | None) -> bytes:
    reason = f": {detail}" if detail else ""
    return json.dumps(
        error_body(f"invalid HTTP request{reason}", "invalid_request_error", None, INVALID_HTTP_CODE)
    ).encode()


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = invalid_http_body(None)
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def json_error_http_protocol() -> type[asyncio.Protocol]:
    """The httptools-based protocol when httptools is installed (what uvicorn's `auto` picks), else the h11 one."""
    if importlib.util.find_spec("httptools") is None:
        return JsonErrorH11Protocol
    return _httptools_protocol()


def _httptools_protocol() -> type[asyncio.Protocol]:
    import httptools
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class _RecordingParser:
        """Delegates to the real parser, keeping the last parse error's text for the 400 body."""

        def __init__(self, parser: Any) -> None:
            self._parser = parser
            self.last_error: str | None = None

        def feed_data(self, data: bytes) -> None:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                raise
            except httptools.HttpParserError as exc:
                self.last_error = str(exc) or None
                raise

        def __getattr__(self, name: str) -> Any:
            return getattr(self._parser, name)

    class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.parser = _RecordingParser(self.parser)  # type: ignore[assignment]

        def send_400_response(self, msg: str) -> None:
            body = invalid_http_body(getattr(self.parser, "last_error", None))
            content = [STATUS_LINE[400]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n",
                    b"\r\n",
                    body,
                ]
            )
            self.transport.write(b"".join(content))
            self.transport.close()

    return JsonErrorHttpToolsProtocol
