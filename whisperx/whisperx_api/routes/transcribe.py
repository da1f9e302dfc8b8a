"""`POST /transcribe`: the WhisperX API its users script against (json with words and speakers, srt, vtt, text)."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from whisper_common.errors import InvalidParameter
from whisper_common.openai_formats import MEDIA_TYPES, ResponseFormat, parse_response_format, render_body
from whisperx_api.pipeline import PipelineResult, TranscribeOptions, check_speaker_bounds, parse_language
from whisperx_api.routes.fields import (
    BatchSizeField,
    FileField,
    LanguageField,
    MaxSpeakersField,
    MinSpeakersField,
    ModelField,
)
from whisperx_api.schemas import TRANSCRIBE_RESPONSES
from whisperx_api.routes.known_speakers import (
    NAMES,
    KnownSpeakerNamesField,
    KnownSpeakerReferencesField,
    known_speakers,
)
from whisperx_api.service import WhisperXService

router = APIRouter(tags=["whisperx"])
FORMATS = (ResponseFormat.JSON, ResponseFormat.SRT, ResponseFormat.VTT, ResponseFormat.TEXT)


@router.post("/transcribe", summary="Transcribe with word timings and, optionally, speakers", responses=TRANSCRIBE_RESPONSES)
async def transcribe(
    request: Request,
    file: FileField,
    model: ModelField = None,
    language: LanguageField = None,
    diarize: Annotated[
        bool | None, Form(description="Label speakers (SPEAKER_00, SPEAKER_01, ...). Default: false, true with known speakers.")
    ] = None,
    min_speakers: MinSpeakersField = None,
    max_speakers: MaxSpeakersField = None,
    batch_size: BatchSizeField = None,
    response_format: Annotated[str | None, Form(description="`json` (default), `srt`, `vtt` or `text`.")] = None,
    known_speaker_names: KnownSpeakerNamesField = None,
    known_speaker_references: KnownSpeakerReferencesField = None,
) -> Response:
    service: WhisperXService = request.app.state.service
    output_format = parse_response_format(response_format, allowed=FORMATS)
    known = await known_speakers(known_speaker_names, known_speaker_references)
    if known and diarize is False:
        raise InvalidParameter(NAMES, f"{NAMES} names diarized speakers: it cannot be used with diarize=false")
    options = TranscribeOptions(
        language=parse_language(language),
        batch_size=batch_size or service.settings.batch_size,
        diarize=bool(known) if diarize is None else diarize,
        bounds=check_speaker_bounds(min_speakers, max_speakers),
        known_speakers=known,
    )
    model_id = service.model_id(model)
    result = await service.transcribe(request, model_id, file.file, options)
    if output_format is ResponseFormat.JSON:
        return JSONResponse(whisperx_json(result))
    body = render_body(result.transcript, output_format)
    return PlainTextResponse(str(body), media_type=MEDIA_TYPES[output_format])


def whisperx_json(result: PipelineResult) -> dict[str, Any]:
    transcript = result.transcript
    return {
        "language": transcript.language,
        "segments": [
            {
                "start": round(segment.start, 3),
                "end": round(segment.end, 3),
                "text": segment.text.strip(),
                "speaker": segment.speaker,
                "words": [
                    {
                        "word": word.word,
                        "start": round(word.start, 3),
                        "end": round(word.end, 3),
                        "score": round(word.probability or 0.0, 3),
                        "speaker": word.speaker,
                    }
                    for word in segment.words or ()
                ],
            }
            for segment in transcript.segments
        ],
        "alignment": result.alignment,
        "diarization": result.diarization,
    }
