"""`/v1/jobs`: submit (multipart like the service's synchronous route, or JSON with `audio_url`), read, list, fetch the
result in any format the service offers, cancel or delete; `/v1/webhooks/disabled`: the webhook URLs a 410 disabled,
and their re-enabling. A route parses the request, calls the jobs service (`app.state.jobs`, a `JobsService`) with the
caller (`owners.owner_of`) and formats its answer: a job of another owner is a 404 like one that does not exist.

    include_jobs_routes(app, MyJobOptions, formats=TRANSCRIPTION_FORMATS)   # the service's form fields and formats

The routes are added after `create_service_app`, not in its `routers`: those get a dependency that parses the whole
form before the route runs, and a job upload must stream into DATA_DIR instead.
"""

import json
from collections.abc import Sequence
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from whisper_common.auth import bearer_scheme
from whisper_common.errors import InvalidParameter, MissingParameter
from whisper_common.jobs.intake import Intake, receive_multipart
from whisper_common.jobs.records import DisabledWebhookList, JobList, JobStatus, JobView
from whisper_common.jobs.service import Accepted, JobsService, Submission
from whisper_common.owners import owner_of
from whisper_common.openai_formats import ResponseFormat, parse_granularities, parse_response_format, render

CORE_FIELDS = ("file", "audio_url", "webhook_url", "metadata")
MAX_METADATA_BYTES = 16 * 1024
MAX_JSON_BODY = 1 << 20
MAX_METADATA_DEPTH = 16  # nested objects/arrays; deeper JSON cannot be serialised back (pydantic's depth limit)
JOB_ID = Annotated[str, Path(description="The job's id (`job_...`).", max_length=100)]

JOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid field (the error names it)"},
    404: {"description": "Unknown job"},
    409: {"description": "Not finished yet, failed or canceled (result); Idempotency-Key reused (submit)"},
    413: {"description": "Upload larger than MAX_UPLOAD_MB"},
    429: {"description": "Over the owner's quota: jobs at once (`rate_limit_exceeded`) or today's audio hours "
                         "(`insufficient_quota`); Retry-After says when to try again"},
    507: {"description": "No space left to store the job; nothing was kept"},
}


def _service(request: Request) -> JobsService:
    service: JobsService | None = getattr(request.app.state, "jobs", None)
    if service is None:
        raise InvalidParameter("jobs", "jobs are not available yet; the service is starting")
    return service


def _request_body_schema(options_model: type[BaseModel]) -> dict[str, Any]:
    schema = options_model.model_json_schema()
    properties = dict(schema.get("properties", {}))
    core = {
        "webhook_url": {"type": "string", "format": "uri", "description": "Where to POST the finished job (Standard Webhooks, signed with WEBHOOK_SECRET)."},
        "metadata": {"type": "string", "description": "A small JSON object (at most 16 KiB), echoed back on the job."},
    }
    multipart = {
        "type": "object",
        "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description": "The audio file."}, **core, **properties},
    }
    as_json = {
        "type": "object",
        "required": ["audio_url"],
        "properties": {
            "audio_url": {"type": "string", "format": "uri", "description": "Audio the service downloads (ALLOW_AUDIO_URLS)."},
            **core,
            "metadata": {"type": "object", "description": "A small JSON object (at most 16 KiB), echoed back."},
            **properties,
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": multipart}, "application/json": {"schema": as_json}},
        }
    }


def include_jobs_routes(app: FastAPI, options_model: type[BaseModel], formats: Sequence[ResponseFormat]) -> None:
    app.include_router(jobs_router(options_model, formats), dependencies=[Depends(bearer_scheme)])
    app.include_router(webhooks_router(), dependencies=[Depends(bearer_scheme)])


def webhooks_router() -> APIRouter:
    router = APIRouter(prefix="/v1/webhooks", tags=["jobs"])

    @router.get("/disabled", response_model=DisabledWebhookList,
                summary="Webhook URLs a 410 Gone disabled (the caller's; an admin's: everyone's)")
    async def list_disabled(request: Request) -> DisabledWebhookList:
        return await _service(request).disabled_webhooks(owner_of(request))

    @router.delete("/disabled/{disabled_id}", summary="Deliver to a disabled webhook URL again",
                   responses={404: {"description": "No such entry of the caller's"}})
    async def enable(
        request: Request, disabled_id: Annotated[str, Path(max_length=100, description="The entry's id (`whd_...`).")]
    ) -> JSONResponse:
        await _service(request).enable_webhook(owner_of(request), disabled_id)
        return JSONResponse({"id": disabled_id, "object": "webhook.disabled_url", "deleted": True})

    return router


def jobs_router(options_model: type[BaseModel], formats: Sequence[ResponseFormat]) -> APIRouter:
    router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
    format_names = ", ".join(f"`{item.value}`" for item in formats)

    @router.post(
        "",
        status_code=202,
        response_model=JobView,
        summary="Submit a transcription job (answers at once; poll it or get a webhook)",
        responses=JOB_RESPONSES,
        openapi_extra=_request_body_schema(options_model),
    )
    async def submit(
        request: Request,
        idempotency_key: Annotated[
            str | None,
            Header(alias="Idempotency-Key", max_length=255, description="The same key and body give the same job."),
        ] = None,
    ) -> Response:
        service = _service(request)
        intake = await _receive(request, service.upload_dir)
        try:
            accepted = await service.submit(owner_of(request), _submission(intake, options_model, idempotency_key))
        finally:
            intake.discard()
        return _accepted(accepted)

    @router.get("", response_model=JobList, summary="List jobs, newest first")
    async def list_jobs(
        request: Request,
        status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="At most this many.")] = 20,
        after: Annotated[str | None, Query(max_length=100, description="The `last_id` of the previous page.")] = None,
    ) -> JobList:
        return await _service(request).list(owner_of(request), status, limit, after)

    @router.get("/{job_id}", response_model=JobView, summary="A job: status, progress, attempts, webhook deliveries",
                responses={404: JOB_RESPONSES[404]})
    async def get_job(request: Request, job_id: JOB_ID) -> JobView:
        return await _service(request).get(owner_of(request), job_id)

    @router.get(
        "/{job_id}/result",
        summary="The transcript of a succeeded job, in any format of the synchronous route",
        responses={404: JOB_RESPONSES[404], 409: JOB_RESPONSES[409]},
    )
    async def get_result(
        request: Request,
        job_id: JOB_ID,
        response_format: Annotated[
            str | None, Query(description=f"{format_names}; unset: the format asked at submit (json by default).")
        ] = None,
    ) -> Response:
        result = await _service(request).result(owner_of(request), job_id)
        asked = result.options
        chosen = parse_response_format(response_format or asked.get("response_format"), allowed=formats)
        granularities = frozenset()
        if chosen in (ResponseFormat.VERBOSE_JSON, ResponseFormat.DIARIZED_JSON):
            granularities = parse_granularities(asked.get("timestamp_granularities") or (), chosen)
        return render(result.transcript, chosen, granularities)

    @router.delete(
        "/{job_id}",
        summary="Cancel a queued or running job, or delete a finished one with its audio and result",
        responses={404: JOB_RESPONSES[404]},
    )
    async def delete_job(request: Request, job_id: JOB_ID) -> JSONResponse:
        ended = await _service(request).cancel(owner_of(request), job_id)
        if ended.deleted:
            return JSONResponse({"id": job_id, "object": "transcription.job.deleted", "deleted": True})
        status_code = 202 if ended.job.status is JobStatus.RUNNING else 200  # 202: it stops at its next segment
        return JSONResponse(ended.job.model_dump(mode="json"), status_code=status_code)

    return router


async def _receive(request: Request, upload_dir: FilePath) -> Intake:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() == "application/json":
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON_BODY:
                raise InvalidParameter("body", "a JSON job request must be under 1 MiB; upload audio as multipart")
        try:
            data = json.loads(body or b"null")
        except RecursionError:
            raise InvalidParameter("body", "the JSON body is nested too deeply") from None
        except ValueError:
            raise InvalidParameter("body", "the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidParameter("body", "the JSON body must be an object")
        fields: dict[str, list[Any]] = {key: [value] for key, value in data.items()}
        return Intake(fields=fields)  # type: ignore[arg-type]
    return await receive_multipart(request, upload_dir)


def _single(fields: dict[str, list[Any]], name: str) -> Any:
    values = fields.pop(name, None)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidParameter(name, f"'{name}' was sent more than once")
    return values[0]


def _metadata(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except RecursionError:
            raise InvalidParameter("metadata", f"metadata may nest at most {MAX_METADATA_DEPTH} levels") from None
        except ValueError:
            raise InvalidParameter("metadata", "metadata must be a JSON object, e.g. {\"meeting\": \"weekly\"}") from None
    if not isinstance(value, dict):
        raise InvalidParameter("metadata", "metadata must be a JSON object, e.g. {\"meeting\": \"weekly\"}")
    if _depth(value) > MAX_METADATA_DEPTH:
        raise InvalidParameter("metadata", f"metadata may nest at most {MAX_METADATA_DEPTH} levels")
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise InvalidParameter("metadata", "metadata must be at most 16 KiB of JSON")
    return value


def _depth(value: Any) -> int:
    """How many objects/arrays deep `value` nests, counted without recursion (bounded by MAX_METADATA_DEPTH + 1)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, dict | list):
            continue
        deepest = max(deepest, level)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _options(options_model: type[BaseModel], fields: dict[str, list[Any]]) -> BaseModel:
    values: dict[str, Any] = {}
    for name, items in fields.items():
        key = name.removesuffix("[]")
        if name.endswith("[]") or key in values or len(items) > 1:
            values.setdefault(key, [])
            existing = values[key] if isinstance(values[key], list) else [values[key]]
            values[key] = [*existing, *items]
        else:
            values[key] = items[0]
    try:
        options = options_model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first["loc"][0]) if first.get("loc") else "body"
        if first.get("type") == "extra_forbidden":
            raise InvalidParameter(param, f"unknown field '{param}'") from None
        if first.get("type") == "value_error" and "error" in first.get("ctx", {}):
            raise InvalidParameter(param, str(first["ctx"]["error"])) from None
        raise InvalidParameter(param, f"invalid '{param}': {first.get('msg', 'invalid value')}") from None
    return options


def _submission(intake: Intake, options_model: type[BaseModel], idempotency_key: str | None) -> Submission:
    fields = dict(intake.fields)
    fields.pop("file", None)
    audio_url = _single(fields, "audio_url")
    webhook_url = _single(fields, "webhook_url")
    metadata = _metadata(_single(fields, "metadata"))
    options = _options(options_model, fields)
    if audio_url is not None and not isinstance(audio_url, str):
        raise InvalidParameter("audio_url", "audio_url must be a string URL")
    if webhook_url is not None and not isinstance(webhook_url, str):
        raise InvalidParameter("webhook_url", "webhook_url must be a string URL")
    if audio_url and intake.file is not None:
        raise InvalidParameter("audio_url", "send either a file or audio_url, not both")
    if not audio_url and intake.file is None:
        raise MissingParameter("file", "'file' is required (or, with ALLOW_AUDIO_URLS, a JSON body with 'audio_url')")
    return Submission(
        options=options, metadata=metadata, audio_url=audio_url, webhook_url=webhook_url,
        file=intake.file, file_sha256=intake.file_sha256, idempotency_key=idempotency_key,
    )


def _accepted(accepted: Accepted) -> Response:
    headers = {"Location": f"/v1/jobs/{accepted.job.id}"}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(accepted.job.model_dump(mode="json"), status_code=202, headers=headers)
