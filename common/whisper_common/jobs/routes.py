"""`/v1/jobs`: submit (multipart like the service's synchronous route, or JSON with `audio_url`), read, list, fetch the
result in any format the service offers, cancel or delete. Parse and validate here; the runtime does the rest.

    include_jobs_routes(app, MyJobOptions, formats=TRANSCRIPTION_FORMATS)   # the service's form fields and formats

The routes are added after `create_service_app`, not in its `routers`: those get a dependency that parses the whole
form before the route runs, and a job upload must stream into DATA_DIR instead.
"""

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from whisper_common.auth import bearer_scheme
from whisper_common.errors import InvalidParameter, MissingParameter
from whisper_common.jobs.engine import transcript_from_json
from whisper_common.jobs.errors import (
    AudioUrlsDisabled,
    IdempotencyConflict,
    InsufficientStorage,
    JobNotFinished,
    JobNotFound,
)
from whisper_common.jobs.intake import Intake, check_free_space, receive_multipart
from whisper_common.jobs.model import JobList, JobRow, JobStatus, JobView, new_job_id
from whisper_common.jobs.runtime import JobsRuntime
from whisper_common.jobs.store import DuplicateKey, StorageFull
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
    507: {"description": "No space left to store the job; nothing was kept"},
}


def _runtime(request: Request) -> JobsRuntime:
    runtime: JobsRuntime | None = getattr(request.app.state, "jobs", None)
    if runtime is None:
        raise InvalidParameter("jobs", "jobs are not available yet; the service is starting")
    return runtime


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
        runtime = _runtime(request)
        intake = await _receive(request, runtime)
        try:
            job = await _accept(runtime, intake, options_model, idempotency_key)
        finally:
            intake.discard()
        return job

    @router.get("", response_model=JobList, summary="List jobs, newest first")
    async def list_jobs(
        request: Request,
        status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="At most this many.")] = 20,
        after: Annotated[str | None, Query(max_length=100, description="The `last_id` of the previous page.")] = None,
    ) -> JobList:
        runtime = _runtime(request)
        rows, has_more = await asyncio.to_thread(runtime.store.list, status, limit, after)
        return JobList(data=[row.view() for row in rows], has_more=has_more, last_id=rows[-1].id if rows else None)

    @router.get("/{job_id}", response_model=JobView, summary="A job: status, progress, attempts, webhook deliveries",
                responses={404: JOB_RESPONSES[404]})
    async def get_job(request: Request, job_id: JOB_ID) -> JobView:
        runtime = _runtime(request)
        job = await _get(runtime, job_id)
        deliveries = await asyncio.to_thread(runtime.store.deliveries, job_id)
        return job.view(deliveries)

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
        runtime = _runtime(request)
        job = await _get(runtime, job_id)
        if job.status is not JobStatus.SUCCEEDED or job.result is None:
            raise _not_finished(job)
        options = job.options_dict
        chosen = parse_response_format(response_format or options.get("response_format"), allowed=formats)
        granularities = frozenset()
        if chosen in (ResponseFormat.VERBOSE_JSON, ResponseFormat.DIARIZED_JSON):
            granularities = parse_granularities(options.get("timestamp_granularities") or (), chosen)
        transcript = await asyncio.to_thread(transcript_from_json, job.result)
        return render(transcript, chosen, granularities)

    @router.delete(
        "/{job_id}",
        summary="Cancel a queued or running job, or delete a finished one with its audio and result",
        responses={404: JOB_RESPONSES[404]},
    )
    async def delete_job(request: Request, job_id: JOB_ID) -> JSONResponse:
        runtime = _runtime(request)
        job, deleted = await asyncio.to_thread(runtime.store.cancel_or_delete, job_id, time.time())
        if job is None:
            raise JobNotFound(job_id)
        if deleted:
            await asyncio.to_thread(runtime.files.remove, job_id)
            return JSONResponse({"id": job_id, "object": "transcription.job.deleted", "deleted": True})
        if job.status is JobStatus.RUNNING:
            runtime.cancel_local(job_id)
            return JSONResponse(job.view().model_dump(mode="json"), status_code=202)
        runtime.outbox_ready.set()
        return JSONResponse(job.view().model_dump(mode="json"))

    return router


async def _get(runtime: JobsRuntime, job_id: str) -> JobRow:
    job = await asyncio.to_thread(runtime.store.get, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def _not_finished(job: JobRow) -> JobNotFinished:
    if job.status is JobStatus.FAILED:
        error = job.error_view()
        reason = error.message if error else "unknown"
        return JobNotFinished(f"job {job.id} failed: {reason}")
    if job.status is JobStatus.CANCELED:
        return JobNotFinished(f"job {job.id} was canceled; it has no result")
    return JobNotFinished(f"job {job.id} is {job.status.value}; its result is not ready (poll GET /v1/jobs/{job.id})")


async def _receive(request: Request, runtime: JobsRuntime) -> Intake:
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
    return await receive_multipart(request, runtime.files.incoming)


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


def _options(
    options_model: type[BaseModel], fields: dict[str, list[Any]], check: Callable[[Any], None]
) -> dict[str, Any]:
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
    check(options)  # what needs the service, e.g. an English-only model asked for another language
    return options.model_dump(mode="json", exclude_none=True)


async def _accept(
    runtime: JobsRuntime, intake: Intake, options_model: type[BaseModel], idempotency_key: str | None
) -> Response:
    fields = dict(intake.fields)
    fields.pop("file", None)
    audio_url = _single(fields, "audio_url")
    webhook_url = _single(fields, "webhook_url")
    metadata = _metadata(_single(fields, "metadata"))
    options = _options(options_model, fields, runtime.engine.check)
    if audio_url is not None and not isinstance(audio_url, str):
        raise InvalidParameter("audio_url", "audio_url must be a string URL")
    if webhook_url is not None and not isinstance(webhook_url, str):
        raise InvalidParameter("webhook_url", "webhook_url must be a string URL")
    if audio_url and intake.file is not None:
        raise InvalidParameter("audio_url", "send either a file or audio_url, not both")
    if not audio_url and intake.file is None:
        raise MissingParameter("file", "'file' is required (or, with ALLOW_AUDIO_URLS, a JSON body with 'audio_url')")
    if audio_url:
        if not runtime.settings.allow_audio_urls:
            raise AudioUrlsDisabled()
        await runtime.policy.check("audio_url", audio_url)
    if webhook_url:
        await runtime.policy.check("webhook_url", webhook_url)

    request_hash = hashlib.sha256(
        json.dumps(
            [options, metadata, webhook_url, audio_url, intake.file_sha256], sort_keys=True, separators=(",", ":")
        ).encode()
    ).hexdigest()
    if idempotency_key:
        existing = await asyncio.to_thread(runtime.store.by_idempotency_key, idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash)

    now = time.time()
    job = JobRow(
        id=new_job_id(), queue=runtime.store.queue, status=JobStatus.QUEUED, created_at=now, run_after=now,
        max_attempts=runtime.max_attempts,
        options=json.dumps(options), metadata=json.dumps(metadata), webhook_url=webhook_url, audio_url=audio_url,
        idempotency_key=idempotency_key or None, request_hash=request_hash,
    )
    try:
        if intake.file is not None:
            check_free_space(runtime.files.root, 1 << 20)
            job.audio_file = await asyncio.to_thread(runtime.files.adopt, job.id, intake.file)
            intake.file = None
        await asyncio.to_thread(runtime.store.insert, job)
    except DuplicateKey:
        await asyncio.to_thread(runtime.files.remove, job.id)
        existing = await asyncio.to_thread(runtime.store.by_idempotency_key, idempotency_key or "")
        if existing is None:
            raise
        return _replay(existing, request_hash)
    except (StorageFull, InsufficientStorage, OSError) as exc:
        await asyncio.to_thread(runtime.files.remove, job.id)
        if isinstance(exc, OSError) and exc.errno not in (28, 122):  # ENOSPC, EDQUOT
            raise
        raise InsufficientStorage() from None
    runtime.accepted()
    return JSONResponse(job.view().model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


def _replay(existing: JobRow, request_hash: str) -> Response:
    if existing.request_hash != request_hash:
        raise IdempotencyConflict()
    return JSONResponse(
        existing.view().model_dump(mode="json"), status_code=202,
        headers={"Location": f"/v1/jobs/{existing.id}", "Idempotent-Replayed": "true"},
    )



