"""Domain errors, mapped once to an HTTP status and OpenAI's error body.

Raise these anywhere below the HTTP layer (`raise EmptyAudio()`, `raise ModelNotFound("small")`); the handlers that
`install_error_handlers(app)` registers turn them into

    {"error": {"message": "...", "type": "invalid_request_error", "param": "file", "code": "empty_audio"}}

with the status of the class. FastAPI's RequestValidationError becomes a 400 naming the parameter, HTTPException
keeps its status with the same body, and anything else is logged with its traceback and answered with a JSON 500 that
carries no internals. Middleware that must answer before routing uses `error_response(exc)`.
"""
from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path

logger = logging.getLogger("whisper_common.errors")


class ApiError(Exception):
    """Base of every error a client can be told about. Subclasses fix status, type and code."""

    status_code: ClassVar[int] = 400
    error_type: ClassVar[str] = "invalid_request_error"
    code: ClassVar[str | None] = None
    default_message: ClassVar[str] = "invalid request"

    def __init__(self, message: str | None = None, *, param: str | None = None) -> None:
        self.message = message or self.default_message
        self.param = param
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidParameter(ApiError):
    """A form field or query parameter has a value the API does not accept (400)."""

    code = "invalid_parameter"

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message, param=param)


class MissingParameter(InvalidParameter):
    code = "missing_parameter"


class AudioDecodeError(ApiError):
    """The upload is not audio we can decode: random bytes, text, an unsupported or broken container (400)."""

    code = "invalid_audio"
    default_message = "the uploaded file could not be decoded as audio"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, param="file")


class EmptyAudio(AudioDecodeError):
    """The upload is empty or holds no audio samples (400)."""

    code = "empty_audio"
    default_message = "the uploaded audio is empty (0 bytes or 0 samples)"


class TruncatedAudio(AudioDecodeError):
    """The container declares more audio than the file holds (400)."""

    code = "truncated_audio"
    default_message = "the uploaded audio is truncated"


class AudioTooLong(ApiError):
    """The audio is longer than MAX_AUDIO_SECONDS (400)."""

    code = "audio_too_long"

    def __init__(self, seconds: float, limit: float) -> None:
        super().__init__(f"the audio lasts {seconds:.1f} s, more than the limit of {limit:g} s", param="file")


class UploadTooLarge(ApiError):
    """The request body is larger than MAX_UPLOAD_MB (413)."""

    status_code = 413
    code = "upload_too_large"

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the upload is larger than the limit of {limit_bytes / 2**20:g} MiB (MAX_UPLOAD_MB)", param="file")


class UploadStalled(ApiError):
    """The client stopped sending the request body for BODY_READ_TIMEOUT_SECONDS (408; the connection is closed)."""

    status_code = 408
    code = "upload_timeout"

    def __init__(self, timeout: float) -> None:
        super().__init__(
            f"the upload stalled: no bytes of the request body arrived for {timeout:g} s (BODY_READ_TIMEOUT_SECONDS)"
        )

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class InvalidBody(ApiError):
    """The request body could not be parsed as the form it claims to be (400)."""

    code = "invalid_body"


class IncompleteMultipart(InvalidBody):
    """A multipart body that ends before its closing boundary: an upload cut short (400)."""

    code = "incomplete_multipart"
    default_message = (
        "the multipart body ends before its closing boundary ('--<boundary>--'): the upload was cut short or is malformed"
    )


class DuplicateParameter(InvalidParameter):
    """A form field that takes one value was sent more than once (400)."""

    code = "duplicate_parameter"

    def __init__(self, param: str, count: int) -> None:
        super().__init__(param, f"'{param}' was sent {count} times; send it once")


class Unauthorized(ApiError):
    """Missing or wrong API key (401)."""

    status_code = 401
    code = "invalid_api_key"
    default_message = "missing or invalid API key: send 'Authorization: Bearer <key>'"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelNotFound(ApiError):
    """The model id is unknown, or cannot be found locally or on the hub (404)."""

    status_code = 404
    code = "model_not_found"

    def __init__(self, model: str, reason: str | None = None) -> None:
        message = f"model '{model}' not found" + (f": {reason}" if reason else "")
        super().__init__(message, param="model")
        self.model = model


class ModelLoadError(ApiError):
    """The model exists but could not be loaded (bad files, out of memory, unsupported device) (503)."""

    status_code = 503
    error_type = "server_error"
    code = "model_load_failed"

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model '{model}' could not be loaded: {reason}", param="model")
        self.model = model


class UnsupportedTask(InvalidParameter):
    """The model cannot do what was asked, e.g. translate with an English-only model (400)."""

    code = "unsupported_task"


class ServerBusy(ApiError):
    """Every inference slot and queue place is taken (503 with Retry-After)."""

    status_code = 503
    error_type = "server_error"
    code = "server_busy"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message or f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class NotFound(ApiError):
    """A route or resource that does not exist (404)."""

    status_code = 404
    code = "not_found"


class ClientDisconnected(Exception):
    """The client went away while its request waited or ran. Nothing reaches it; the access log shows 499."""


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer; nobody receives it


def client_disconnected_response() -> JSONResponse:
    return JSONResponse(
        error_body("client closed request", "invalid_request_error", None, "client_disconnected"),
        status_code=CLIENT_CLOSED_REQUEST,
    )


_STATUS_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error"}
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed"}


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's 405 names only the first route that matched the path,
    so `GET /v1/jobs` beside `POST /v1/jobs` would be left out of `Allow`."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.methods and compile_path(getattr(route, "path", route.path_format))[0].match(request.url.path):
            methods.update(route.methods)
    return sorted(methods)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = location[0] if location else None
    if first.get("type") == "missing" and param:
        return f"'{param}' is required", param
    reason = first.get("msg", "invalid value")
    if _is_non_finite(first.get("input")):
        reason = f"must be a finite number, not '{first.get('input')}'"
    return (f"invalid '{param}': {reason}" if param else reason), param


def _is_non_finite(value: Any) -> bool:
    """`nan`, `inf`, `-Infinity`: pydantic parses them as floats and then reports a failed bound ("should be <= 1")."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return False
    return isinstance(value, float) and not math.isfinite(value)


def _body_parse_error(exc: StarletteHTTPException) -> ApiError | None:
    """The frameworks answer a body they cannot parse with HTTPException(400): Starlette with its multipart message,
    FastAPI with "There was an error parsing the body" raised from the parser's error. Name the real problem, with a
    code. (Our own 400s are ApiErrors and never arrive here.)"""
    if exc.status_code != 400:
        return None
    cause = exc.__cause__
    if isinstance(cause, StarletteHTTPException):
        return InvalidBody(f"the request body could not be parsed: {cause.detail}")
    if cause is not None:
        return InvalidBody(f"the request body could not be parsed ({type(cause).__name__})")
    return InvalidBody(f"the request body could not be parsed: {exc.detail}")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into OpenAI's error JSON (call once per app)."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(exc)
        code = "missing_parameter" if exc.errors() and exc.errors()[0].get("type") == "missing" else "invalid_parameter"
        return JSONResponse(error_body(message, "invalid_request_error", param, code), status_code=400)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc.__cause__, ClientDisconnect):
            logger.info("client disconnected while sending the request", extra={"path": request.url.path})
            return client_disconnected_response()
        parse_error = _body_parse_error(exc)
        if parse_error is not None:
            return error_response(parse_error)
        status = exc.status_code
        error_type = "server_error" if status >= 500 else _STATUS_TYPES.get(status, "invalid_request_error")
        code = _STATUS_CODES.get(status)
        headers = dict(exc.headers or {})
        if status == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(error_body(str(exc.detail), error_type, None, code), status_code=status, headers=headers)

    async def disconnected(request: Request, _: Exception) -> JSONResponse:
        logger.info("client disconnected; its work was cancelled", extra={"path": request.url.path})
        return client_disconnected_response()

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal server error", "server_error", None, "internal_error"), status_code=500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnected, disconnected)
    app.add_exception_handler(Exception, unexpected)
