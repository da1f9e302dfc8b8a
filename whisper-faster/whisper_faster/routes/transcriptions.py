"""`POST /v1/audio/transcriptions` and `POST /v1/audio/translations`: OpenAI's form fields plus beam_size, vad_filter
and hotwords (whisper_faster.options). Parse and validate, call the service, format."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from whisper_common.errors import ApiError, error_body
from whisper_common.log import current_request_id
from whisper_common.openai_formats import (
    SSE_MEDIA_TYPE,
    delta_event,
    done_event,
    error_event,
    parse_granularities,
    render,
)
from whisper_common.options import MULTIPART
from whisper_common.schemas import TRANSCRIPTION_RESPONSES
from whisper_common.transcript import Segment, join_segment_texts
from whisper_faster.options import FasterOptions, TranscriptionForm, TranslationForm
from whisper_faster.service import Decoding, TranscriptionService

router = APIRouter(prefix="/v1/audio", tags=["audio"])
logger = logging.getLogger("whisper_faster.stream")


def _service(request: Request) -> TranscriptionService:
    return request.app.state.service


@router.post("/transcriptions", summary="Transcribe audio (OpenAI-compatible)", responses=TRANSCRIPTION_RESPONSES)
async def create_transcription(
    request: Request, form: Annotated[TranscriptionForm, Form(media_type=MULTIPART)]
) -> Response:
    service = _service(request)
    granularities = parse_granularities(form.timestamp_granularities, form.output_format)
    if form.stream:
        return await _stream(service, request, form)
    transcript = await service.transcribe_file(form.file.file, form, request=request)
    return render(transcript, form.output_format, granularities)


@router.post("/translations", summary="Translate audio into English text (OpenAI-compatible)", responses=TRANSCRIPTION_RESPONSES)
async def create_translation(request: Request, form: Annotated[TranslationForm, Form(media_type=MULTIPART)]) -> Response:
    options = form.options_as(FasterOptions)
    transcript = await _service(request).transcribe_file(form.file.file, options, task="translate", request=request)
    return render(transcript, options.output_format, frozenset())


async def _stream(service: TranscriptionService, request: Request, form: TranscriptionForm) -> StreamingResponse:
    """Admission, model and audio errors are still plain JSON errors; after that, segments as `delta` events."""
    resources = AsyncExitStack()
    try:
        decoding = await resources.enter_async_context(service.open_file(form.file.file, form, request=request))
    except BaseException:
        await resources.aclose()
        raise
    return StreamingResponse(
        _sse(decoding, resources),
        media_type=SSE_MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(resources.aclose),
    )


async def _sse(decoding: Decoding, resources: AsyncExitStack) -> AsyncIterator[str]:
    texts: list[str] = []
    segments: AsyncIterator[Segment] = decoding.stream()
    try:
        async for segment in segments:
            texts.append(segment.text)
            yield delta_event(segment.text)
        yield done_event(join_segment_texts(texts))
    except ApiError as exc:
        yield error_event(exc.body())
    except Exception:
        logger.exception("stream failed", extra={"request_id": current_request_id()})
        yield error_event(error_body("internal server error", "server_error", None, "internal_error"))
    finally:
        await segments.aclose()  # type: ignore[attr-defined]
        await resources.aclose()
