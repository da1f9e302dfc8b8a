"""`/v1/speakers`: the caller's voiceprint library (enrol, list, read, add clips, delete). A route parses, calls the
library, formats; another owner's speaker is a 404 (admins see every owner's).

    POST   /v1/speakers                 multipart `name` + one or more `file` parts, or JSON {"name", "files": [data URLs]}
    GET    /v1/speakers                 {"object": "list", "data": [...], "has_more", "last_id"}
    GET    /v1/speakers/{id}
    POST   /v1/speakers/{id}/samples    one or more `file` parts, or JSON {"files": [...]}
    DELETE /v1/speakers/{id}            {"id", "object": "speaker.deleted", "deleted": true}
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from whisper_common.errors import InvalidBody, InvalidParameter, MissingParameter
from whisper_common.owners import owner_of
from whisper_common.schemas import ErrorResponse
from whisper_common.speakers.library import MAX_CLIPS_PER_REQUEST, SpeakerLibrary
from whisper_common.speakers.store import SpeakerRow

FILE_FIELD = "file"
JSON_FILES_FIELD = "files"
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
SpeakerId = Annotated[str, Path(max_length=100, description="The speaker's id (`spk_...`).")]


class SampleView(BaseModel):
    id: str
    created_at: int
    seconds: float = Field(description="The clip's length.")
    speech_seconds: float = Field(description="The speech in it (what was embedded).")
    model: str = Field(description="The embedding model that made this sample's vector.")
    audio_kept: bool = Field(description="Whether its audio is kept (SPEAKERS__KEEP_AUDIO).")


class SpeakerView(BaseModel):
    id: str
    object: Literal["speaker"] = "speaker"
    name: str
    owner: str
    created_at: int
    updated_at: int
    status: Literal["ready", "stale"] = Field(
        description="`ready`: used for matching. `stale`: every sample was made by another embedding model than "
        "the one running: not used until a clip is added again."
    )
    model: str = Field(description="The embedding model of the vectors used for matching (the running one when ready).")
    speech_seconds: float = Field(description="Speech of the samples used for matching.")
    samples: list[SampleView]


class SpeakerList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SpeakerView]
    has_more: bool
    last_id: str | None = Field(description="Pass it as `after` for the next page.")


class SpeakerDeleted(BaseModel):
    id: str
    object: Literal["speaker.deleted"] = "speaker.deleted"
    deleted: bool = True


def speaker_view(speaker: SpeakerRow, running_model: str) -> SpeakerView:
    current = [sample for sample in speaker.samples if sample.model == running_model]
    models = sorted({sample.model for sample in speaker.samples})
    return SpeakerView(
        id=speaker.id, name=speaker.name, owner=speaker.owner, created_at=speaker.created_at,
        updated_at=speaker.updated_at, status="ready" if current else "stale",
        model=running_model if current else ", ".join(models),
        speech_seconds=round(sum(sample.speech_seconds for sample in current), 2),
        samples=[SampleView(id=s.id, created_at=int(s.created_at), seconds=s.seconds, speech_seconds=s.speech_seconds,
                            model=s.model, audio_kept=s.audio_kept) for s in speaker.samples],
    )


def _clip_body(with_name: bool) -> dict[str, Any]:
    """The request body for OpenAPI (the route reads it itself: a form or JSON)."""
    name = {"name": {"type": "string", "maxLength": 64, "description": "What matched turns and utterances are called."}}
    form = {"type": "object", "required": [*(["name"] if with_name else []), FILE_FIELD], "properties": {
        **(name if with_name else {}),
        FILE_FIELD: {"type": "array", "maxItems": MAX_CLIPS_PER_REQUEST, "items": {"type": "string", "format": "binary"},
                     "description": "One or more clips of this voice alone (any audio format; at least 2 s of speech)."},
    }}
    as_json = {"type": "object", "required": [*(["name"] if with_name else []), JSON_FILES_FIELD], "properties": {
        **(name if with_name else {}),
        JSON_FILES_FIELD: {"type": "array", "maxItems": MAX_CLIPS_PER_REQUEST, "items": {"type": "string"},
                           "description": "Clips as data URLs (`data:audio/wav;base64,...`)."},
    }}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": form, "encoding": {FILE_FIELD: {"contentType": "audio/*"}}},
        "application/json": {"schema": as_json},
    }}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A clip that is not audio, too short or long, or holds no speech "
          "(the message names the field and the clip); a bad name"},
    404: {"model": ErrorResponse, "description": "No such speaker (or another owner's)"},
}


async def _parts(request: Request, with_name: bool) -> tuple[str | None, list[Any], str]:
    """(name, clips, the field that holds them) from a form or a JSON body."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type in _FORMS:
        form = await request.form()
        names = form.getlist("name")
        if len(names) > 1:
            raise InvalidParameter("name", "'name' was sent more than once")
        clips = [*form.getlist(FILE_FIELD), *form.getlist(f"{FILE_FIELD}[]")]
        name = names[0] if names else None
        if name is not None and not isinstance(name, str):
            raise InvalidParameter("name", "'name' must be a text field, not a file")
        return name, clips, FILE_FIELD
    if content_type == "application/json":
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            raise InvalidBody("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InvalidBody("the JSON body must be an object: {\"name\": ..., \"files\": [data URLs]}")
        clips = body.get(JSON_FILES_FIELD, body.get(FILE_FIELD, []))
        clips = [clips] if isinstance(clips, str) else clips
        if not isinstance(clips, list) or not all(isinstance(clip, str) for clip in clips):
            raise InvalidParameter(JSON_FILES_FIELD, f"'{JSON_FILES_FIELD}' must be a list of data URLs")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidParameter("name", "'name' must be a string")
        return name, clips, JSON_FILES_FIELD
    raise InvalidBody(f"the request body must be multipart/form-data or application/json (got "
                      f"{content_type[:100] or 'no Content-Type'})")


def _library(request: Request) -> SpeakerLibrary:
    return request.app.state.speakers


def speakers_router() -> APIRouter:
    router = APIRouter(prefix="/v1/speakers", tags=["speakers"])

    @router.post("", status_code=201, response_model=SpeakerView, responses={**_ERRORS, 409: {
        "model": ErrorResponse, "description": "You already have a speaker of this name"}},
        summary="Enrol a voice: its name and one or more clips", openapi_extra=_clip_body(True))
    async def enrol(request: Request) -> SpeakerView:
        name, clips, field = await _parts(request, with_name=True)
        if name is None:
            raise MissingParameter("name", "'name' is required: what this voice is called")
        if not clips:
            raise MissingParameter(field, f"send one or more clips of the voice as '{field}'")
        library = _library(request)
        speaker = await library.enrol(owner_of(request), name, clips, field)
        return speaker_view(speaker, library.model_id())

    @router.get("", response_model=SpeakerList, summary="The caller's speakers (an admin's: everyone's), by name")
    async def list_speakers(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100, description="At most this many.")] = 20,
        after: Annotated[str | None, Query(max_length=100, description="The `last_id` of the previous page.")] = None,
    ) -> SpeakerList:
        library = _library(request)
        rows = await library.list(owner_of(request), limit + 1, after)
        model = library.model_id()
        data = [speaker_view(row, model) for row in rows[:limit]]
        return SpeakerList(data=data, has_more=len(rows) > limit, last_id=data[-1].id if data else None)

    @router.get("/{speaker_id}", response_model=SpeakerView, responses={404: _ERRORS[404]}, summary="A speaker")
    async def get_speaker(request: Request, speaker_id: SpeakerId) -> SpeakerView:
        library = _library(request)
        return speaker_view(await library.get(owner_of(request), speaker_id), library.model_id())

    @router.post("/{speaker_id}/samples", response_model=SpeakerView, responses=_ERRORS,
                 summary="Add clips to a speaker (a stale one becomes ready again)", openapi_extra=_clip_body(False))
    async def add_samples(request: Request, speaker_id: SpeakerId) -> SpeakerView:
        _, clips, field = await _parts(request, with_name=False)
        if not clips:
            raise MissingParameter(field, f"send one or more clips of the voice as '{field}'")
        library = _library(request)
        return speaker_view(await library.add(owner_of(request), speaker_id, clips, field), library.model_id())

    @router.delete("/{speaker_id}", response_model=SpeakerDeleted, responses={404: _ERRORS[404]},
                   summary="Delete a speaker: its vectors and any kept audio; it is matched no more")
    async def delete_speaker(request: Request, speaker_id: SpeakerId) -> SpeakerDeleted:
        await _library(request).delete(owner_of(request), speaker_id)
        return SpeakerDeleted(id=speaker_id)

    return router

