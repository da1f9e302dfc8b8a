"""`POST /v1/audio/transcriptions`: OpenAI's form fields and formats (via whisper_common), plus `diarized_json`,
`transcript.text.segment` events, and the extensions `diarize`, `min_speakers`, `max_speakers`, `batch_size`.
`POST /v1/audio/translations`: OpenAI's translation (English text from any language)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response, StreamingResponse

from whisper_common.errors import InvalidParameter
from whisper_common.openai_formats import (
    SSE_MEDIA_TYPE,
    TRANSCRIPTION_FORMATS,
    ResponseFormat,
    delta_event,
    done_event,
    parse_granularities,
    parse_response_format,
    render,
    segment_event,
    speaker_letters,
)
from whisper_common.schemas import TRANSCRIPTION_RESPONSES
from whisper_common.transcript import Transcript
from whisperx_api.pipeline import TranscribeOptions, check_speaker_bounds, parse_language
from whisperx_api.routes.fields import (
    BatchSizeField,
    FileField,
    LanguageField,
    MaxSpeakersField,
    MinSpeakersField,
    ModelField,
)
from whisperx_api.routes.known_speakers import (
    NAMES,
    KnownSpeakerNamesField,
    KnownSpeakerReferencesField,
    known_speakers,
)
from whisperx_api.service import WhisperXService

router = APIRouter(prefix="/v1/audio", tags=["audio"])
FORMATS = (*TRANSCRIPTION_FORMATS, ResponseFormat.DIARIZED_JSON)

@router.post("/transcriptions", summary="Transcribe audio (OpenAI-compatible, with diarization)", responses=TRANSCRIPTION_RESPONSES)
async def create_transcription(
    request: Request,
    file: FileField,
    model: ModelField = None,
    language: LanguageField = None,
    prompt: Annotated[str | None, Form(description="Text to guide the style or vocabulary (Whisper's initial prompt).")] = None,
    response_format: Annotated[
        str | None, Form(description="`json` (default), `text`, `srt`, `verbose_json`, `vtt` or `diarized_json`.")
    ] = None,
    temperature: Annotated[
        float | None, Form(ge=0.0, le=1.0, description="Accepted for compatibility; WhisperX's batched decoding is beam search.")
    ] = None,
    timestamp_granularities: Annotated[
        list[str] | None,
        Form(alias="timestamp_granularities[]", description="`segment` and/or `word` (needs `verbose_json` or `diarized_json`)."),
    ] = None,
    timestamp_granularities_plain: Annotated[
        list[str] | None, Form(alias="timestamp_granularities", include_in_schema=False)
    ] = None,
    stream: Annotated[
        bool, Form(description="`text/event-stream`: `transcript.text.delta` (or `transcript.text.segment` with "
        "`diarized_json`) per segment, then `transcript.text.done`.")
    ] = False,
    chunking_strategy: Annotated[str | None, Form(description="Accepted for compatibility (WhisperX's VAD chunks).")] = None,
    diarize: Annotated[
        bool | None, Form(description="Extension: label speakers. Default: true for `diarized_json`, else false.")
    ] = None,
    min_speakers: MinSpeakersField = None,
    max_speakers: MaxSpeakersField = None,
    batch_size: BatchSizeField = None,
    known_speaker_names: KnownSpeakerNamesField = None,
    known_speaker_references: KnownSpeakerReferencesField = None,
) -> Response:
    service: WhisperXService = request.app.state.service
    output_format = parse_response_format(response_format, allowed=FORMATS)
    granularities = parse_granularities(
        [*(timestamp_granularities or ()), *(timestamp_granularities_plain or ())], output_format
    )
    known = await known_speakers(known_speaker_names, known_speaker_references)
    if known and diarize is False:
        raise InvalidParameter(NAMES, f"{NAMES} names diarized speakers: it cannot be used with diarize=false")
    with_speakers = output_format is ResponseFormat.DIARIZED_JSON or bool(known) if diarize is None else diarize
    options = TranscribeOptions(
        language=parse_language(language),
        batch_size=batch_size or service.settings.batch_size,
        diarize=with_speakers,
        bounds=check_speaker_bounds(min_speakers, max_speakers),
        prompt=prompt.strip() if prompt and prompt.strip() else None,
        known_speakers=known,
    )
    model_id = service.model_id(model)
    result = await service.transcribe(request, model_id, file.file, options)
    if stream:
        return StreamingResponse(
            _events(result.transcript, output_format),
            media_type=SSE_MEDIA_TYPE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return render(result.transcript, output_format, granularities)


@router.post("/translations", summary="Translate audio into English text (OpenAI-compatible)", responses=TRANSCRIPTION_RESPONSES)
async def create_translation(
    request: Request,
    file: FileField,
    model: ModelField = None,
    prompt: Annotated[str | None, Form(description="Text to guide the style or vocabulary (Whisper's initial prompt).")] = None,
    response_format: Annotated[
        str | None, Form(description="`json` (default), `text`, `srt`, `verbose_json` or `vtt`.")
    ] = None,
    temperature: Annotated[
        float | None, Form(ge=0.0, le=1.0, description="Accepted for compatibility; WhisperX's batched decoding is beam search.")
    ] = None,
    batch_size: BatchSizeField = None,
) -> Response:
    """Speech in any language as English text, with a multilingual model (an English-only one is a 400)."""
    service: WhisperXService = request.app.state.service
    output_format = parse_response_format(response_format)
    options = TranscribeOptions(
        batch_size=batch_size or service.settings.batch_size,
        prompt=prompt.strip() if prompt and prompt.strip() else None,
        task="translate",
    )
    model_id = service.model_id(model)
    result = await service.transcribe(request, model_id, file.file, options)
    return render(result.transcript, output_format, frozenset())


async def _events(transcript: Transcript, output_format: ResponseFormat) -> AsyncIterator[str]:
    labels = speaker_letters(transcript.segments)
    for segment in transcript.segments:
        if output_format is ResponseFormat.DIARIZED_JSON:
            yield segment_event(segment, labels[segment.speaker])
        else:
            yield delta_event(segment.text)
    yield done_event(transcript.text)
