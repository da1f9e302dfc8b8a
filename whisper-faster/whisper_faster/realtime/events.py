"""The Realtime transcription protocol's events as typed models: what clients send (GA and beta forms) and what the
server answers. `parse_client_event(text)` turns a text frame into one of the client models or raises ProtocolError
naming the problem; the server events are dumped with `to_wire(event)`."""
from __future__ import annotations

import json
import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from whisper_common.errors import ApiError
from whisper_common.options import HallucinationGuard, Language, ModelName, Prompt

SAMPLE_RATE = 24_000
"""The only input rate the protocol has: PCM16 mono little-endian at 24 kHz."""
MAX_APPEND_BYTES = 15 * 2**20
"""OpenAI's limit for the decoded audio of one `input_audio_buffer.append`."""


class ProtocolError(Exception):
    """A client event the server cannot act on; sent back as an `error` event (the session goes on)."""

    def __init__(self, message: str, *, code: str, param: str | None = None, event_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.event_id = event_id


class _Lenient(BaseModel):
    """Fields OpenAI has that we do not use (noise_reduction, include, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")


# -- session configuration ---------------------------------------------------------------------------------------


class ServerVad(_Lenient):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=5_000)
    silence_duration_ms: int = Field(500, ge=100, le=10_000)


class Transcription(_Lenient):
    """The fields a session shares with a file's transcription (whisper_common.options): the same checks.
    `hallucination_guard` is an extension (false: an utterance without speech is still decoded and `completed`);
    `speakers` too (whose names label the utterances' `speaker`)."""

    model: ModelName = None
    language: Language = None
    prompt: Prompt = None
    hallucination_guard: HallucinationGuard = True
    speakers: str | None = Field(
        None, max_length=4000,
        description="Extension: `library` (the default): each `completed` carries a `speaker`, the name of your "
        "voiceprint (`/v1/speakers`) the voice matches, else a letter (`A`, `B`, ...) stable within the session; "
        "names or ids of your voiceprints, comma-separated: only those; `off`: no `speaker`.",
    )


class AudioFormat(_Lenient):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000] = SAMPLE_RATE


class AudioInput(_Lenient):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    turn_detection: ServerVad | None = None


class Audio(_Lenient):
    input: AudioInput | None = None


class TranscriptionSessionConfig(_Lenient):
    """`session` of the GA `session.update`. Only fields present change the session; `turn_detection: null` means
    manual commits."""

    type: Literal["transcription"] = "transcription"
    audio: Audio | None = None


class BetaTranscriptionSessionConfig(_Lenient):
    """`session` of the beta `transcription_session.update`."""

    input_audio_format: Literal["pcm16"] | None = None
    input_audio_transcription: Transcription | None = None
    turn_detection: ServerVad | None = None


# -- client events ---------------------------------------------------------------------------------------------


class _ClientEvent(_Lenient):
    event_id: str | None = None


class SessionUpdate(_ClientEvent):
    type: Literal["session.update"]
    session: TranscriptionSessionConfig


class BetaSessionUpdate(_ClientEvent):
    type: Literal["transcription_session.update"]
    session: BetaTranscriptionSessionConfig


class AudioAppend(_ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str


class AudioCommit(_ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(_ClientEvent):
    type: Literal["input_audio_buffer.clear"]


ClientEvent = Annotated[
    SessionUpdate | BetaSessionUpdate | AudioAppend | AudioCommit | AudioClear, Field(discriminator="type")
]
_CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = ("session.update", "transcription_session.update", "input_audio_buffer.append",
                      "input_audio_buffer.commit", "input_audio_buffer.clear")


def parse_client_event(text: str) -> SessionUpdate | BetaSessionUpdate | AudioAppend | AudioCommit | AudioClear:
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("the message is not valid JSON; send one JSON event per text frame", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise ProtocolError("the message must be a JSON object with a 'type'", code="invalid_event")
    event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
    event_type = raw.get("type")
    if not isinstance(event_type, str):
        raise ProtocolError("the event has no 'type'", code="invalid_event", param="type", event_id=event_id)
    if event_type not in CLIENT_EVENT_TYPES:
        raise ProtocolError(
            f"unknown event type '{event_type[:100]}'; a transcription session accepts {', '.join(CLIENT_EVENT_TYPES)}",
            code="unknown_event_type", param="type", event_id=event_id,
        )
    if event_type == "session.update":
        session = raw.get("session")
        if isinstance(session, dict) and session.get("type") not in (None, "transcription"):
            raise ProtocolError(
                f"session.type '{str(session.get('type'))[:50]}' is not supported here; use 'transcription'",
                code="invalid_value", param="session.type", event_id=event_id,
            )
    try:
        return _CLIENT_EVENT.validate_python(raw)
    except ApiError as exc:  # a shared field's check (an unknown language)
        raise ProtocolError(exc.message, code="invalid_value", param=f"transcription.{exc.param}", event_id=event_id) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"][1:] if not isinstance(part, int)) or None
        raise ProtocolError(
            f"invalid {event_type}: {param + ': ' if param else ''}{first['msg']}",
            code="invalid_value", param=param, event_id=event_id,
        ) from None


# -- server events ---------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class _ServerEvent(BaseModel):
    event_id: str = Field(default_factory=lambda: new_id("event"))


class SessionCreated(_ServerEvent):
    type: Literal["session.created", "transcription_session.created"] = "session.created"
    session: dict[str, Any]


class SessionUpdated(_ServerEvent):
    type: Literal["session.updated", "transcription_session.updated"] = "session.updated"
    session: dict[str, Any]


class SpeechStarted(_ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class SpeechStopped(_ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class Committed(_ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class Cleared(_ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class TranscriptionDelta(_ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str


class Usage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionCompleted(_ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int = 0
    transcript: str
    usage: Usage
    speaker: str | None = Field(None, exclude_if=lambda value: value is None)
    """Extension: who spoke (a voiceprint's name, else a session-local letter); absent with `speakers: "off"`."""


class ErrorDetail(BaseModel):
    """OpenAI's error shape (the Realtime form also names the client event that caused it)."""

    type: str = "invalid_request_error"
    code: str | None = None
    message: str
    param: str | None = None
    event_id: str | None = None


class TranscriptionFailed(_ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    content_index: int = 0
    error: ErrorDetail


class ErrorEvent(_ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail


ServerEvent = (
    SessionCreated | SessionUpdated | SpeechStarted | SpeechStopped | Committed | Cleared | TranscriptionDelta
    | TranscriptionCompleted | TranscriptionFailed | ErrorEvent
)


def error_event(message: str, code: str, *, error_type: str = "invalid_request_error", param: str | None = None,
                event_id: str | None = None) -> ErrorEvent:
    return ErrorEvent(error=ErrorDetail(type=error_type, code=code, message=message, param=param, event_id=event_id))


def to_wire(event: ServerEvent) -> str:
    return event.model_dump_json()
