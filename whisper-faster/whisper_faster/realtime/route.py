"""The edge of realtime: `GET /v1/realtime` (WebSocket), `GET /v1/realtime/sessions/{id}` and the `/realtime` page.

The WebSocket handler is the only place with I/O: it admits the session (or answers an `error` event and close 1013),
feeds frames to the sans-io RealtimeSession, runs the decodes it asks for through the batch scheduler at live priority
(before any request's or job's window, and without waiting for an inference slot: MAX_REALTIME_SESSIONS and the
admission bound them), sends what it answers, and stores finished utterances. Protocol mistakes become `error` events;
the session goes on.

A session belongs to the caller that opened it (`owners.owner_of`: resolved, and held to its quotas, before the
handshake is accepted); only its owner (or an admin) reads it back, another owner gets the 404 of a session that does
not exist. Its audio seconds are counted in the owner's usage when it ends, and its transcript goes into the
transcript library (`realtime.library`), searchable by its owner."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Annotated

import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.websockets import WebSocketDisconnect, WebSocketState

from whisper_common.batching import Priority
from whisper_common.batching.ctranslate2_ops import request_model
from whisper_common.batching.runtime import Batching
from whisper_common.db.janitor import every
from whisper_common.errors import ApiError, NotFound
from whisper_common.model_catalog import resolve_model_id
from whisper_common.model_manager import ModelManager
from whisper_common.openai_formats import ResponseFormat, parse_response_format, render
from whisper_common.options import check_model_supports
from whisper_common.owners import owner_of
from whisper_common.speech_guard import Report
from whisper_common.transcript import Segment, Transcript
from whisper_common.transcripts import SourceKind, TranscriptLibrary
from whisper_faster.models import LoadedModel
from whisper_faster.realtime import events as ev
from whisper_faster.realtime.admission import Admission, RealtimeMetrics
from whisper_faster.realtime.decode import transcribe_utterance
from whisper_faster.realtime.labels import LiveLabels
from whisper_faster.realtime.library import index_session, register_sessions
from whisper_faster.realtime.session import (
    Close, Decode, DecodeRequest, Limits, Output, RealtimeSession, Send, SessionConfig, Utterance,
)
from whisper_faster.realtime.store import SessionStore, StoredSession, StoredUtterance, open_session_store
from whisper_faster.realtime.vad import SileroStream
from whisper_faster.settings import Settings

logger = logging.getLogger("whisper_faster.realtime")

API_KEY_PROTOCOL = "openai-insecure-api-key."
"""Browsers cannot set headers on a WebSocket: OpenAI's browser form sends the key as this subprotocol."""
PAGE_PATH = "/realtime"
SOCKET_PATH = "/v1/realtime"
SESSION_FORMATS = (ResponseFormat.JSON, ResponseFormat.TEXT, ResponseFormat.SRT, ResponseFormat.VTT)
TRY_AGAIN_LATER = 1013


@dataclass
class Realtime:
    """What the realtime routes use: `app.state.realtime`."""

    settings: Settings
    manager: ModelManager[LoadedModel]
    batching: Batching
    admission: Admission
    store: SessionStore
    transcripts: TranscriptLibrary | None = None
    """Where an ended session's transcript is indexed for search."""
    labels: LiveLabels | None = None
    """Speaker labels (REALTIME_SPEAKERS, with the voiceprint library); None: completed carries no `speaker`."""

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(partial_interval_ms=s.realtime_partial_interval_ms,
                      max_utterance_seconds=s.realtime_max_utterance_seconds,
                      max_lag_seconds=s.realtime_max_lag_seconds, idle_seconds=s.realtime_idle_seconds)

    def model_id(self, requested: str | None) -> str:
        """OpenAI's transcription model names (whisper-1, gpt-4o-transcribe, ...) mean the configured default."""
        if requested is None or requested == "whisper-1" or requested.startswith("gpt-"):
            requested = None
        return resolve_model_id(requested, self.settings)


@contextlib.asynccontextmanager
async def serve_realtime(app: FastAPI, settings: Settings, manager: ModelManager[LoadedModel],
                         transcripts: TranscriptLibrary | None = None) -> AsyncIterator[Realtime]:
    """`app.state.realtime` for the lifespan, with a janitor that removes stored sessions past REALTIME_RETENTION;
    with `transcripts`, ended sessions are indexed there."""
    realtime = create_realtime(app, settings, manager)
    realtime.transcripts = transcripts

    async def erase(owner: str) -> int:
        return await asyncio.to_thread(realtime.store.erase_owner, owner)

    app.state.erasure.register("realtime_sessions", erase)
    if transcripts is not None:
        register_sessions(transcripts, realtime.store, settings.realtime_retention)
    janitor = asyncio.create_task(every(
        max(1.0, min(3600.0, settings.realtime_retention / 4)),
        lambda: _remove_expired_sessions(realtime.store, settings.realtime_retention),
        what="removing old realtime sessions", logger=logger,
    ))
    try:
        yield realtime
    finally:
        app.state.erasure.unregister("realtime_sessions")
        if transcripts is not None:
            transcripts.unregister(SourceKind.REALTIME)
        janitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await janitor
        realtime.store.shutdown()


def _remove_expired_sessions(store: SessionStore, retention: float) -> None:
    removed = store.remove_ended_before(time.time() - retention)
    if removed:
        logger.info("realtime sessions removed after REALTIME_RETENTION", extra={"sessions": removed})


def create_realtime(app: FastAPI, settings: Settings, manager: ModelManager[LoadedModel]) -> Realtime:
    """Build `app.state.realtime` in the lifespan; its open sessions count as activity (no idle stop)."""
    metrics = RealtimeMetrics(app.state.metrics.registry)
    admission = Admission(settings.max_realtime_sessions, settings.realtime_max_load, metrics,
                          max_wait=settings.realtime_max_lag_seconds / 2, max_cpu=settings.realtime_max_cpu)
    store = open_session_store(settings)
    realtime = Realtime(settings, manager, app.state.batching, admission, store)
    library = getattr(app.state, "speakers", None)
    if settings.realtime_speakers and library is not None:
        realtime.labels = LiveLabels(library, settings)
    app.state.realtime = realtime
    app.state.activity.register("realtime_sessions", lambda: admission.open)
    return realtime


# -- WebSocket --------------------------------------------------------------------------------------------------

socket_router = APIRouter()


def _subprotocol(websocket: WebSocket) -> str | None:
    """The protocol to answer with: a browser fails the handshake if none of its offers comes back; never the key."""
    offered = [p for p in websocket.scope.get("subprotocols", []) if not p.startswith(API_KEY_PROTOCOL)]
    return "realtime" if "realtime" in offered else (offered[0] if offered else None)


@socket_router.websocket(SOCKET_PATH)
async def realtime_socket(websocket: WebSocket) -> None:
    realtime: Realtime = websocket.app.state.realtime
    owner = owner_of(websocket)
    await websocket.accept(subprotocol=_subprotocol(websocket))
    intent = websocket.query_params.get("intent")
    if intent not in (None, "", "transcription"):
        await _refuse(websocket, f"intent '{intent[:50]}' is not supported; this server only transcribes "
                      "(intent=transcription)", "unsupported_intent", 1008)
        return
    refusal = realtime.admission.refusal()
    if refusal is not None:
        reason, message = refusal
        realtime.admission.rejected(reason)
        logger.warning("realtime session refused", extra={"reason": reason})
        code = "session_limit_reached" if reason == "limit" else "server_overloaded"
        await _refuse(websocket, message, code, TRY_AGAIN_LATER, error_type="server_error")
        return
    beta = "realtime=v1" in websocket.headers.get("openai-beta", "")
    session = RealtimeSession(ev.new_id("sess"), realtime.limits, SileroStream(), beta=beta, now=time.monotonic())
    realtime.admission.opened()
    try:  # the slot is given back whatever happens, or the service would count a session forever (never idle)
        try:
            await asyncio.to_thread(realtime.store.create, session.session_id, realtime.model_id(None), owner.name)
        except Exception as exc:  # noqa: BLE001 - the client gets an error event, the log the reason
            logger.error("realtime session could not be stored", extra={"session": session.session_id,
                                                                        "error": repr(exc)})
            await _refuse(websocket, "the server could not store the session (DATA_DIR); try again later",
                          "session_store_failed", 1011, error_type="server_error")
            return
        logger.info("realtime session opened", extra={"session": session.session_id, "beta": beta})
        try:
            await _Connection(websocket, session, realtime).run()
        finally:
            if realtime.labels is not None:
                realtime.labels.detach(session)
            model = realtime.model_id(session.config.model)
            websocket.app.state.usage.audio(owner.name, SOCKET_PATH, model, session.audio_seconds)
            await asyncio.to_thread(realtime.store.close, session.session_id, model)
            await _index(realtime, session.session_id)
            logger.info("realtime session closed", extra={"session": session.session_id,
                                                          "audio_seconds": round(session.audio_seconds, 1)})
    finally:
        realtime.admission.closed()


async def _index(realtime: Realtime, session_id: str) -> None:
    if realtime.transcripts is None:
        return
    try:
        await index_session(realtime.transcripts, realtime.store, session_id)
    except Exception as exc:  # noqa: BLE001 - the session stays readable by id; only search misses it
        logger.warning("the session's transcript could not be indexed for search", extra={"session": session_id,
                                                                                          "error": repr(exc)})


async def _refuse(websocket: WebSocket, message: str, code: str, close_code: int,
                  error_type: str = "invalid_request_error") -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(ev.to_wire(ev.error_event(message, code, error_type=error_type)))
        await websocket.close(close_code, message[:120])


class _Connection:
    def __init__(self, websocket: WebSocket, session: RealtimeSession, realtime: Realtime) -> None:
        self.websocket = websocket
        self.session = session
        self.realtime = realtime
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writes: set[asyncio.Future[None]] = set()
        """Utterances being stored: a session ends (and is indexed) only once they are in."""
        self._gone = False

    async def run(self) -> None:
        await self._apply(self.session.start())
        if self.realtime.labels is not None:
            await self._apply(await self.realtime.labels.attach(self.session, owner_of(self.websocket).name))
        ticker = asyncio.create_task(self._tick())
        try:
            while not self.session.closed and not self._gone:
                try:
                    message = await self.websocket.receive()
                except (WebSocketDisconnect, RuntimeError):
                    break
                if message["type"] == "websocket.disconnect":
                    break
                await self._apply(self._on_message(message))
        finally:
            ticker.cancel()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(ticker, *self._tasks, return_exceptions=True)
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _on_message(self, message: dict) -> list[Output]:
        text = message.get("text")
        if text is None:
            return self.session.protocol_error(ev.ProtocolError(
                "binary frames are not part of the protocol; send JSON text events (audio base64-encoded in "
                "input_audio_buffer.append)", code="binary_not_supported"))
        try:
            event = ev.parse_client_event(text)
            if isinstance(event, (ev.SessionUpdate, ev.BetaSessionUpdate)):
                self._validate(self.session.config.updated(event), event.event_id)
                outputs = self.session.handle(event, time.monotonic())
                return outputs + (self.realtime.labels.configure(self.session) if self.realtime.labels else [])
            return self.session.handle(event, time.monotonic())
        except ev.ProtocolError as exc:
            return self.session.protocol_error(exc)

    def _validate(self, config: SessionConfig, event_id: str | None) -> None:
        """A model the server cannot use, or a language it cannot transcribe (an English-only model asked for
        another), is refused at the update, not at the first utterance. (An unknown language fails in parsing.)"""
        try:
            check_model_supports(self.realtime.model_id(config.model), "transcribe", config.language)
        except ApiError as exc:
            raise ev.ProtocolError(exc.message, code=exc.code or "invalid_value", param=f"transcription.{exc.param}",
                                   event_id=event_id) from None

    async def _tick(self) -> None:
        period = min(1.0, self.realtime.settings.realtime_idle_seconds / 4)
        while not self.session.closed:
            await asyncio.sleep(period)
            self.realtime.admission.sample()
            await self._apply(self.session.tick(time.monotonic()))

    async def _apply(self, outputs: list[Output]) -> None:
        async with self._send_lock:
            # An utterance is stored before its `completed` is sent: a client that has it can read it back (and a
            # session closed right after it is indexed with it), even if the socket closes meanwhile.
            for output in outputs:
                if isinstance(output, Utterance):
                    await self._store(output)
            for output in outputs:
                match output:
                    case Send(event):
                        await self._send(ev.to_wire(event))
                    case Decode(request):
                        task = asyncio.create_task(self._decode(request))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    case Close(code, reason):
                        if code == TRY_AGAIN_LATER:
                            self.realtime.admission.rejected("lagging")
                        logger.warning("realtime session closed by the server",
                                       extra={"session": self.session.session_id, "reason": reason})
                        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                            await self.websocket.close(code, reason)
                        self._gone = True
                    case Utterance() as utterance:
                        if utterance.latency_seconds is not None:
                            self.realtime.admission.observe_latency(utterance.latency_seconds)

    async def _store(self, utterance: Utterance) -> None:
        write = asyncio.ensure_future(asyncio.to_thread(
            self.realtime.store.add_utterance, self.session.session_id,
            StoredUtterance(utterance.item_id, round(utterance.start, 3), round(utterance.end, 3), utterance.text,
                            utterance.speaker),
        ))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        await asyncio.shield(write)  # a disconnect cancels the decode, not a write already under way

    async def _send(self, text: str) -> None:
        if self._gone or self.websocket.application_state != WebSocketState.CONNECTED:
            return
        try:
            await self.websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._gone = True

    async def _decode(self, request: DecodeRequest) -> None:
        realtime = self.realtime
        started = time.monotonic()
        try:
            model_id = realtime.model_id(request.config.model)
            async with realtime.manager.use(model_id) as model:
                check_model_supports(model_id, "transcribe", request.config.language, model)
                report = self.websocket.app.state.metrics.hallucination_suppressed
                labels = realtime.labels if self.session.speakers is not None else None
                text, voice = await asyncio.to_thread(_live_decode, realtime.batching, model, request, report, labels)
        except ApiError as exc:
            error = ev.ErrorDetail(type=exc.error_type, code=exc.code, message=exc.message, param=exc.param)
            outputs = self.session.decode_failed(request, error, time.monotonic())
        except Exception as exc:  # noqa: BLE001 - the client gets a `failed` event, the log the traceback
            logger.error("realtime decode failed", exc_info=exc, extra={"session": self.session.session_id})
            error = ev.ErrorDetail(type="server_error", code="internal_error", message="transcription failed")
            outputs = self.session.decode_failed(request, error, time.monotonic())
        else:
            if request.final:
                realtime.admission.record(time.monotonic() - started, request.audio_seconds)
            outputs = self.session.decoded(request, text, time.monotonic(), voice)
        await self._apply(outputs)


def _live_decode(batching: Batching, model: LoadedModel, request: DecodeRequest, report: Report,
                 labels: LiveLabels | None = None) -> tuple[str, np.ndarray | None]:
    """A session's decode with its CTranslate2 calls at live priority (batched with other sessions' where they
    agree), and a final's voice when the session labels speakers."""
    started = labels.start_voice(request) if labels is not None else None  # the voice beside the decode
    with batching.scheduler.opened(Priority.LIVE, label="realtime") as stream:
        text = transcribe_utterance(LoadedModel(model.model_id, request_model(model.whisper, stream)), request, report)
    return text, labels.voice(request, text, started) if labels is not None else None


# -- stored sessions and the page -------------------------------------------------------------------------------

router = APIRouter(tags=["realtime"])


@router.get(
    "/v1/realtime/sessions/{session_id}",
    summary="A realtime session's final utterances (json, text, srt or vtt)",
    responses={404: {"description": "No such session"}},
)
async def get_session(
    request: Request,
    session_id: str,
    response_format: Annotated[str | None, Query(description="`json` (default), `text`, `srt` or `vtt`.")] = None,
) -> Response:
    response_format_ = parse_response_format(response_format, allowed=SESSION_FORMATS)
    realtime: Realtime = request.app.state.realtime
    owner = owner_of(request)
    stored = await asyncio.to_thread(realtime.store.get, session_id, owner) if len(session_id) <= 100 else None
    if stored is None:
        raise NotFound(f"no realtime session '{session_id[:100]}'", param="session_id")
    if response_format_ is ResponseFormat.JSON:
        return JSONResponse(session_json(stored))
    return render(session_transcript(stored), response_format_)


def session_json(stored: StoredSession) -> dict:
    return {
        "id": stored.id, "object": "realtime.transcription_session", "owner": stored.owner, "model": stored.model,
        "created_at": stored.created_at, "closed_at": stored.closed_at,
        "text": " ".join(utterance.text for utterance in stored.utterances if utterance.text),
        "duration": stored.duration,
        "utterances": [{"item_id": u.item_id, "start": u.start, "end": u.end, "text": u.text, "speaker": u.speaker}
                       for u in stored.utterances],
    }


def session_transcript(stored: StoredSession) -> Transcript:
    segments = [Segment(id=index, start=u.start, end=u.end, text=" " + u.text, speaker=u.speaker)
                for index, u in enumerate(stored.utterances) if u.text]
    return Transcript(language="en", duration=stored.duration, segments=segments)


page_router = APIRouter()


@page_router.get(PAGE_PATH, include_in_schema=False)
async def realtime_page() -> HTMLResponse:
    return HTMLResponse(_page())


def _page() -> str:
    return resources.files("whisper_faster.realtime").joinpath("static/realtime.html").read_text(encoding="utf-8")


def install(app: FastAPI) -> None:
    """The WebSocket and the page: outside the bearer-scheme routers (the API-key middleware guards the socket)."""
    app.include_router(socket_router)
    app.include_router(page_router)

