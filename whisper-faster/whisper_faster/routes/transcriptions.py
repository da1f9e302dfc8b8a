"""`POST /v1/audio/transcriptions` and `POST /v1/audio/translations`: OpenAI's form fields plus beam_size, vad_filter
and hotwords. Parse and validate, call the service, format."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from whisper_common.errors import ApiError, InvalidParameter, error_body
from whisper_common.languages import language_code
from whisper_common.log import current_request_id
from whisper_common.model_catalog import resolve_model_id
from whisper_common.openai_formats import (
    SSE_MEDIA_TYPE,
    TRANSCRIPTION_FORMATS,
    TimestampGranularity,
    delta_event,
    done_event,
    error_event,
    parse_granularities,
    parse_response_format,
    render,
    wants_words,
)
from whisper_common.schemas import TRANSCRIPTION_RESPONSES
from whisper_common.transcript import Segment, join_segment_texts
from whisper_faster.engine import InferenceOptions
from whisper_faster.service import TranscriptionService

router = APIRouter(prefix="/v1/audio", tags=["audio"])
logger = logging.getLogger("whisper_faster.stream")

FileField = Annotated[UploadFile, File(description="The audio file (any format FFmpeg reads: flac, mp3, wav, ogg, m4a, webm, ...).")]
ModelField = Annotated[
    str | None,
    Form(description="`tiny.en` (embedded), `whisper-1` (= the configured default), a size name or a Hugging Face repo id."),
]
PromptField = Annotated[str | None, Form(description="Text to guide the style or continue a previous segment.")]
FormatField = Annotated[
    str | None,
    Form(
        description="`json` (default), `text`, `srt`, `verbose_json` or `vtt`.",
        json_schema_extra={"enum": [item.value for item in TRANSCRIPTION_FORMATS]},
    ),
]
TemperatureField = Annotated[
    float | None, Form(ge=0.0, le=1.0, description="Sampling temperature 0-1. Unset: faster-whisper's fallback 0, 0.2, ... 1.")
]
BeamSizeField = Annotated[int, Form(ge=1, le=20, description="Extension: beam search width.")]
VadField = Annotated[bool, Form(description="Extension: skip non-speech with Silero VAD.")]
HotwordsField = Annotated[str | None, Form(description="Extension: words or phrases to favour (names, jargon).")]


def _service(request: Request) -> TranscriptionService:
    return request.app.state.service


def _language(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    code = language_code(value)
    if code is None:
        raise InvalidParameter("language", f"language '{value[:50]}' is not supported; use an ISO-639-1 code such as 'en'")
    return code


@router.post("/transcriptions", summary="Transcribe audio (OpenAI-compatible)", responses=TRANSCRIPTION_RESPONSES)
async def create_transcription(
    request: Request,
    file: FileField,
    model: ModelField = None,
    language: Annotated[str | None, Form(description="ISO-639-1 code of the spoken language; unset: detected.")] = None,
    prompt: PromptField = None,
    response_format: FormatField = None,
    temperature: TemperatureField = None,
    timestamp_granularities: Annotated[
        list[str] | None,
        Form(
            alias="timestamp_granularities[]",
            description="`segment` and/or `word` (needs `verbose_json`). `word` alone: words without segments.",
        ),
    ] = None,
    timestamp_granularities_plain: Annotated[
        list[str] | None, Form(alias="timestamp_granularities", include_in_schema=False)
    ] = None,
    stream: Annotated[bool, Form(description="Send `text/event-stream` events as segments are decoded.")] = False,
    beam_size: BeamSizeField = 5,
    vad_filter: VadField = False,
    hotwords: HotwordsField = None,
) -> Response:
    service = _service(request)
    output_format = parse_response_format(response_format)
    granularities = parse_granularities([*(timestamp_granularities or ()), *(timestamp_granularities_plain or ())], output_format)
    model_id = resolve_model_id(model, service.settings)
    options = InferenceOptions(
        task="transcribe",
        language=_language(language),
        prompt=prompt,
        temperature=temperature,
        word_timestamps=wants_words(granularities),
        beam_size=beam_size,
        vad_filter=vad_filter,
        hotwords=hotwords,
    )
    if stream:
        return await _stream(service, request, model_id, file, options)
    transcript = await service.transcribe(request, model_id, file.file, options)
    return render(transcript, output_format, granularities)


@router.post("/translations", summary="Translate audio into English text (OpenAI-compatible)", responses=TRANSCRIPTION_RESPONSES)
async def create_translation(
    request: Request,
    file: FileField,
    model: ModelField = None,
    prompt: PromptField = None,
    response_format: FormatField = None,
    temperature: TemperatureField = None,
    beam_size: BeamSizeField = 5,
    vad_filter: VadField = False,
) -> Response:
    service = _service(request)
    output_format = parse_response_format(response_format)
    model_id = resolve_model_id(model, service.settings)
    options = InferenceOptions(
        task="translate", prompt=prompt, temperature=temperature, beam_size=beam_size, vad_filter=vad_filter
    )
    transcript = await service.transcribe(request, model_id, file.file, options)
    return render(transcript, output_format, frozenset[TimestampGranularity]())


async def _stream(
    service: TranscriptionService, request: Request, model_id: str, file: UploadFile, options: InferenceOptions
) -> StreamingResponse:
    segments, resources = await service.open_stream(request, model_id, file.file, options)
    return StreamingResponse(
        _sse(segments, resources),
        media_type=SSE_MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(resources.aclose),
    )


async def _sse(segments: AsyncIterator[Segment], resources: AsyncExitStack) -> AsyncIterator[str]:
    texts: list[str] = []
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
