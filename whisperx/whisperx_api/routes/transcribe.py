"""`POST /transcribe`: the WhisperX API its users script against (json with words, speakers and the diarizer's turns,
srt, vtt, text, rttm)."""
from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from whisper_common.openai_formats import MEDIA_TYPES, ResponseFormat, render_body, to_rttm, turn_json
from whisper_common.options import MULTIPART
from whisperx_api.options import TranscribeForm, WhisperXOptions
from whisperx_api.pipeline import PipelineResult
from whisperx_api.routes.known_speakers import known_voices
from whisperx_api.schemas import TRANSCRIBE_RESPONSES
from whisperx_api.service import WhisperXService

router = APIRouter(tags=["whisperx"])


@router.post("/transcribe", summary="Transcribe with word timings and, optionally, speakers", responses=TRANSCRIBE_RESPONSES)
async def transcribe(request: Request, form: Annotated[TranscribeForm, Form(media_type=MULTIPART)]) -> Response:
    service: WhisperXService = request.app.state.service
    options = form.options_as(WhisperXOptions)
    known, headers = await known_voices(request, form, options)
    result = await service.transcribe_file(form.file.file, options, known_speakers=known, request=request)
    if options.output_format is ResponseFormat.JSON:
        return JSONResponse(whisperx_json(result), headers=headers)
    if options.output_format is ResponseFormat.RTTM:
        body = to_rttm(result.transcript, file_id=rttm_file_id(form.file.filename))
    else:
        body = str(render_body(result.transcript, options.output_format))
    return PlainTextResponse(body, media_type=MEDIA_TYPES[options.output_format], headers=headers)


def rttm_file_id(filename: str | None) -> str:
    """RTTM's file id: the upload's name without its extension (`meeting.wav` -> `meeting`)."""
    return PurePath(filename or "audio").stem or "audio"


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
        **({"turns": [turn_json(turn, turn.speaker) for turn in transcript.turns]} if transcript.turns is not None else {}),
        "alignment": result.alignment,
        "diarization": result.diarization,
    }
