"""`POST /v1/audio/transcriptions`: OpenAI's form fields and formats (via whisper_common), plus `diarized_json`,
`transcript.text.segment` events, the known speakers (clips and `speakers`: the caller's voiceprints), and the
extensions `diarize`, `min_speakers`, `max_speakers`, `batch_size`, `response_format=rttm` (whisperx_api.options).
`POST /v1/audio/translations`: OpenAI's translation (English text from any language)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from whisper_common.openai_formats import (
    MEDIA_TYPES,
    SSE_MEDIA_TYPE,
    ResponseFormat,
    delta_event,
    done_event,
    parse_granularities,
    render,
    segment_event,
    speaker_letters,
    to_rttm,
)
from whisper_common.options import MULTIPART
from whisper_common.schemas import TRANSCRIPTION_RESPONSES
from whisper_common.transcript import Transcript
from whisperx_api.options import TranscriptionForm, TranslationForm, WhisperXOptions
from whisperx_api.routes.known_speakers import known_voices
from whisperx_api.routes.transcribe import rttm_file_id
from whisperx_api.service import WhisperXService

router = APIRouter(prefix="/v1/audio", tags=["audio"])


@router.post("/transcriptions", summary="Transcribe audio (OpenAI-compatible, with diarization)", responses=TRANSCRIPTION_RESPONSES)
async def create_transcription(
    request: Request, form: Annotated[TranscriptionForm, Form(media_type=MULTIPART)]
) -> Response:
    service: WhisperXService = request.app.state.service
    output_format = form.output_format
    granularities = parse_granularities(form.timestamp_granularities, output_format)
    known, headers = await known_voices(request, form, form)
    result = await service.transcribe_file(form.file.file, form, known_speakers=known, request=request)
    if form.stream:
        return StreamingResponse(
            _events(result.transcript, output_format),
            media_type=SSE_MEDIA_TYPE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
        )
    if output_format is ResponseFormat.RTTM:
        rttm = to_rttm(result.transcript, file_id=rttm_file_id(form.file.filename))
        return PlainTextResponse(rttm, media_type=MEDIA_TYPES[output_format], headers=headers)
    response = render(result.transcript, output_format, granularities)
    response.headers.update(headers)
    return response


@router.post("/translations", summary="Translate audio into English text (OpenAI-compatible)", responses=TRANSCRIPTION_RESPONSES)
async def create_translation(request: Request, form: Annotated[TranslationForm, Form(media_type=MULTIPART)]) -> Response:
    """Speech in any language as English text, with a multilingual model (an English-only one is a 400)."""
    service: WhisperXService = request.app.state.service
    options = form.options_as(WhisperXOptions)
    result = await service.transcribe_file(form.file.file, options, task="translate", request=request)
    return render(result.transcript, options.output_format, frozenset())


async def _events(transcript: Transcript, output_format: ResponseFormat) -> AsyncIterator[str]:
    labels = speaker_letters(transcript.segments)
    for segment in transcript.segments:
        if output_format is ResponseFormat.DIARIZED_JSON:
            yield segment_event(segment, labels[segment.speaker])
        else:
            yield delta_event(segment.text)
    yield done_event(transcript.text)
