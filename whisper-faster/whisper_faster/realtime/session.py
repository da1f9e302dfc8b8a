"""One realtime transcription session as a sans-io state machine: client events and decode results in, server events
and decode requests out. It does no I/O and reads no clock: the route passes `now` and runs what it asks for.

    session = RealtimeSession(session_id, limits, vad=SileroStream())
    outputs = session.handle(event, now)            # Send(event) | Decode(request) | Close(code, reason) | Utterance
    outputs = session.decoded(request, text, now, voice)  # when a Decode ran (decode_failed on an error); `voice`:
                                                          # a final's d-vector, when the session labels speakers
    outputs = session.tick(now)                     # idle and lag checks, about once a second

Scheduling keeps it real-time: at most one decode per session at a time, in this order: a committed utterance's final
transcript, a speculative final once the speaker has paused (so `completed` follows the end of speech by little more
than the VAD's silence), then a partial re-decode when `partial_interval` of new audio has come.

An utterance whose final comes back empty while the hallucination guard is on (nothing was said: noise the VAD took
for speech, or a manual commit of silence) ends at `committed`: no `completed` follows and nothing is stored, unless
deltas were already sent (then `completed` carries the empty correction).

With `speakers` set (SessionSpeakers, realtime/speakers.py), each `completed` carries a `speaker`: the voice of the
utterance (the d-vector the route computed beside the final's transcript) labelled by a voiceprint's name or a
session-local letter."""
from __future__ import annotations

import base64
import binascii
import itertools
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from whisper_faster.realtime import events as ev
from whisper_faster.realtime.agreement import LocalAgreement
from whisper_faster.realtime.audio import Resampler
from whisper_faster.realtime.speakers import SessionSpeakers
from whisper_faster.realtime.vad import VAD_RATE, WINDOW, SpeechProbabilities, TurnDetector

MIN_COMMIT_SAMPLES = VAD_RATE // 10
"""OpenAI refuses to commit less than 100 ms of audio."""
FINAL_TAIL_SAMPLES = VAD_RATE // 5
"""Silence kept after the last voiced window (Whisper ends words better with a little of it); a speculative final
starts once this much silence has come."""
MIN_PARTIAL_SAMPLES = VAD_RATE // 2
CONTEXT_CHARS = 200
"""How much of the earlier finals goes into the prompt (a long prompt costs decode time and can be parroted)."""
LEFT_CONTEXT_SAMPLES = 5 * VAD_RATE
"""Audio kept from before an utterance: when the previous utterance began at most this long before it, a decode
hears that utterance too (its final text is forced as Whisper's prefix and cut from the result). Whisper then
transcribes the new words with the acoustic context it was trained with, instead of from a cold start on a short
clip ("ask not" alone is easily heard as "yes, not"). It costs decoder time for the forced prefix, and encoder time
where it makes a short decode's window longer than its 10 s minimum: 5 s keeps it to a short earlier utterance
(measured in bench/bench_realtime.py: with 10 s, end -> completed p50 rose from 0.69 s to 0.76 s)."""
MAX_DECODE_SAMPLES = 28 * VAD_RATE
"""A decode with context stays inside one Whisper window (30 s); longer, it goes without the context."""


# -- configuration -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionConfig:
    """What the client configured (the model as it named it; the route resolves it)."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    hallucination_guard: bool = True
    speakers: str | None = None
    """Whose names label the utterances: None or `library` (all the caller's voiceprints), names, or `off`."""
    turn_detection: ev.ServerVad | None = field(default_factory=ev.ServerVad)

    def updated(self, event: ev.SessionUpdate | ev.BetaSessionUpdate) -> SessionConfig:
        """Only the fields present in the update change; `turn_detection: null` switches to manual commits."""
        config = self
        if isinstance(event, ev.SessionUpdate):
            audio_input = event.session.audio.input if event.session.audio else None
            if audio_input is None:
                return config
            transcription = audio_input.transcription
            turn_present = "turn_detection" in audio_input.model_fields_set
        else:
            audio_input = event.session
            transcription = event.session.input_audio_transcription
            turn_present = "turn_detection" in event.session.model_fields_set
        if transcription is not None:
            config = replace(config, **{name: getattr(transcription, name) for name in transcription.model_fields_set})
        if turn_present:
            config = replace(config, turn_detection=audio_input.turn_detection)
        return config

    def describe(self, session_id: str, beta: bool) -> dict[str, Any]:
        transcription = {"model": self.model or "whisper-1", "language": self.language, "prompt": self.prompt,
                         "hallucination_guard": self.hallucination_guard, "speakers": self.speakers}
        turn = self.turn_detection.model_dump() if self.turn_detection else None
        if beta:
            return {"id": session_id, "object": "realtime.transcription_session", "input_audio_format": "pcm16",
                    "input_audio_transcription": transcription, "turn_detection": turn,
                    "input_audio_noise_reduction": None, "include": None}
        return {"type": "transcription", "id": session_id, "object": "realtime.transcription_session",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": ev.SAMPLE_RATE}, "transcription":
                                    transcription, "turn_detection": turn, "noise_reduction": None}},
                "include": None}


@dataclass(frozen=True)
class Limits:
    partial_interval_ms: int = 500
    max_utterance_seconds: float = 25.0
    max_lag_seconds: float = 6.0
    idle_seconds: float = 60.0


# -- outputs -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    event: ev.ServerEvent


@dataclass(frozen=True)
class DecodeRequest:
    """Transcribe `samples` (16 kHz mono float32) of utterance `item_id`. `final` asks for the careful decode."""

    job_id: int
    item_id: str
    samples: np.ndarray = field(repr=False)
    final: bool
    config: SessionConfig
    end: int
    """Absolute sample where the decoded audio ends."""
    context: str = ""
    """The end of the session's earlier finals: Whisper's prompt (after the client's own), for continuity."""
    context_samples: int = 0
    """How many of the leading `samples` belong to the earlier utterance heard as left context (and the pause after)."""
    context_text: str = ""
    """That earlier utterance's final transcript (empty when no audio leads `samples`): the decode is forced to begin
    with it, and it is cut from the result."""
    has_speech: bool = True
    """Whether the VAD heard speech in the utterance (a manual commit may hold none: the guard then decodes nothing)."""
    speech_confirmed: bool = False
    """Whether an earlier decode of the utterance gave words (the guard's speech gate need not look at it again)."""

    @property
    def prompt(self) -> str | None:
        return " ".join(part for part in (self.config.prompt, self.context) if part) or None

    @property
    def audio_seconds(self) -> float:
        return len(self.samples) / VAD_RATE

    @property
    def context_seconds(self) -> float:
        return self.context_samples / VAD_RATE

    def without_context(self, text: str) -> str:
        """The decoded `text` less the forced context transcript at its start."""
        text = " ".join(text.split())
        context = " ".join(self.context_text.split())
        if context and text.startswith(context):
            return text[len(context):].strip()
        return text


@dataclass(frozen=True)
class Decode:
    request: DecodeRequest


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True)
class Utterance:
    """A finished utterance: its final text, where it lies in the session's audio, and how long after the end of
    speech its transcript was ready (None when the client committed by hand)."""

    item_id: str
    start: float
    end: float
    text: str
    latency_seconds: float | None
    speaker: str | None = None


Output = Send | Decode | Close | Utterance


# -- state -------------------------------------------------------------------------------------------------------


@dataclass
class _Item:
    item_id: str
    start: int
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    partial_from: int = 0
    """Audio end of the last partial decode started."""
    speculated_end: int | None = None
    guesses: dict[int, str] = field(default_factory=dict)
    """Final-quality transcripts by audio end (speculative decodes), reused when the commit ends there."""
    voices: dict[int, np.ndarray] = field(default_factory=dict)
    """Their voices (d-vectors) by audio end, when the session labels speakers."""
    has_speech: bool = False
    speech_confirmed: bool = False
    """A decode of it gave words: the speech gate found speech in it."""


@dataclass(frozen=True)
class _Spoken:
    """A completed utterance: where its audio began and its final transcript (the next decode's left context)."""

    start: int
    text: str


@dataclass
class _Final:
    item: _Item
    end: int
    samples: np.ndarray = field(repr=False)
    samples_start: int
    """Absolute sample where `samples` begins: up to LEFT_CONTEXT_SAMPLES before the utterance."""
    speech_end_at: float | None
    committed_at: float


class RealtimeSession:
    def __init__(self, session_id: str, limits: Limits, vad: SpeechProbabilities, *, beta: bool = False,
                 now: float = 0.0) -> None:
        self.session_id = session_id
        self.limits = limits
        self.beta = beta
        self.config = SessionConfig()
        self.closed = False
        self.speakers: SessionSpeakers | None = None
        """Set by the route when the session labels speakers (its voiceprints loaded)."""
        self._vad = vad
        self._resampler = Resampler()
        self._turns = self._new_detector()
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start = 0
        self._total = 0
        self._arrivals: deque[tuple[int, float]] = deque()
        self._item: _Item | None = None
        self._finals: deque[_Final] = deque()
        self._in_flight: DecodeRequest | None = None
        self._jobs = itertools.count(1)
        self._previous_item_id: str | None = None
        self._committed_until = 0
        """Where the last committed utterance ended: the next one's padding never reaches back into it."""
        self._context = ""
        self._spoken: _Spoken | None = None
        self._last_audio_at = now

    # -- inputs ----------------------------------------------------------------------------------------------

    def start(self) -> list[Output]:
        created = "transcription_session.created" if self.beta else "session.created"
        return [Send(ev.SessionCreated(type=created, session=self.config.describe(self.session_id, self.beta)))]

    def handle(self, event: ev.SessionUpdate | ev.BetaSessionUpdate | ev.AudioAppend | ev.AudioCommit | ev.AudioClear,
               now: float) -> list[Output]:
        if self.closed:
            return []
        match event:
            case ev.SessionUpdate() | ev.BetaSessionUpdate():
                return self._update(event)
            case ev.AudioAppend():
                return self._append(event, now)
            case ev.AudioCommit():
                return self._commit_by_client(event, now)
            case ev.AudioClear():
                return self._clear()
        raise AssertionError(event)

    def protocol_error(self, error: ev.ProtocolError) -> list[Output]:
        return [Send(ev.error_event(error.message, error.code, param=error.param, event_id=error.event_id))]

    def decoded(self, request: DecodeRequest, text: str, now: float, voice: np.ndarray | None = None) -> list[Output]:
        if self._in_flight is request:
            self._in_flight = None
        if self.closed:
            return []
        text = " ".join(text.split())
        outputs: list[Output] = []
        decoded_item = self._item_by_id(request.item_id)
        if text and decoded_item is not None:
            decoded_item.speech_confirmed = True
        final = self._finals[0] if self._finals else None
        if request.final:
            if final is not None and final.item.item_id == request.item_id and final.end == request.end:
                outputs += self._complete(final, text, now, voice)
            else:
                item = self._item_by_id(request.item_id)
                if item is not None:
                    item.guesses[request.end] = text
                    if voice is not None:
                        item.voices[request.end] = voice
                    outputs += self._delta(item, text)
                    if final is not None and final.item is item and final.end in item.guesses:
                        outputs += self._complete(final, item.guesses[final.end], now, item.voices.get(final.end))
        else:
            item = self._item_by_id(request.item_id)
            if item is not None:
                outputs += self._delta(item, text)
        return outputs + self._schedule()

    def decode_failed(self, request: DecodeRequest, error: ev.ErrorDetail, now: float) -> list[Output]:
        """A decode could not run (model missing, server busy). A final fails its item; a guess or partial is
        dropped (the next one may succeed)."""
        if self._in_flight is request:
            self._in_flight = None
        if self.closed:
            return []
        outputs: list[Output] = []
        final = self._finals[0] if self._finals else None
        if final is not None and final.item.item_id == request.item_id and final.end == request.end:
            self._finals.popleft()
            self._spoken = None  # no transcript to give the next utterance as context
            outputs.append(Send(ev.TranscriptionFailed(item_id=request.item_id, error=error)))
        return outputs + self._schedule()

    def tick(self, now: float) -> list[Output]:
        """Idle and lag checks."""
        if self.closed:
            return []
        if now - self._last_audio_at >= self.limits.idle_seconds:
            return self._close(
                ev.error_event(f"no audio for {self.limits.idle_seconds:g} s (REALTIME_IDLE_SECONDS); closing the "
                               "session", "idle_timeout"),
                1000, "idle timeout",
            )
        if self._finals and now - self._finals[0].committed_at > self.limits.max_lag_seconds:
            return self._close(
                ev.error_event(
                    f"the server cannot keep up: an utterance has waited {now - self._finals[0].committed_at:.1f} s "
                    "for its transcript; closing the session instead of falling further behind",
                    "server_overloaded", error_type="server_error",
                ),
                1013, "try again later",
            )
        return []

    # -- events ----------------------------------------------------------------------------------------------

    def _update(self, event: ev.SessionUpdate | ev.BetaSessionUpdate) -> list[Output]:
        previous = self.config.turn_detection
        self.config = self.config.updated(event)
        if self.config.turn_detection != previous:
            self._turns = self._new_detector()
        beta = isinstance(event, ev.BetaSessionUpdate)
        updated = "transcription_session.updated" if beta else "session.updated"
        return [Send(ev.SessionUpdated(type=updated, session=self.config.describe(self.session_id, beta)))]

    def _append(self, event: ev.AudioAppend, now: float) -> list[Output]:
        samples = self._decode_audio(event)
        self._last_audio_at = now
        if samples.size == 0:
            return []
        self._audio = np.concatenate([self._audio, samples])
        self._total += len(samples)
        self._arrivals.append((self._total, now))
        outputs: list[Output] = []
        for end, probability in self._vad(samples):
            outputs += self._on_window(end, probability, now)
        if self._item is None:
            # Nothing to keep but the padding before speech (VAD) or, by hand, the longest utterance allowed.
            manual_keep = int(self.limits.max_utterance_seconds * VAD_RATE)
            self._trim(self._total - (self._prefix_samples() if self.config.turn_detection else manual_keep))
        elif self._item is not None and self._total - self._item.start >= self.limits.max_utterance_seconds * VAD_RATE:
            outputs += self._commit(self._total, speech_end_at=now, now=now, stopped_by_vad=True)
            if self.config.turn_detection is not None:
                outputs += self._start_item(self._total, now)
                self._item.has_speech = True  # type: ignore[union-attr]
        return outputs + self._schedule()

    def _on_window(self, end: int, probability: float, now: float) -> list[Output]:
        if end - WINDOW < self._committed_until:
            return []  # a window that holds audio already committed or cleared
        vad = self.config.turn_detection
        if vad is None:
            if probability >= 0.5:
                if self._item is None:
                    start = self._uncommitted_start()
                    self._item = _Item(ev.new_id("item"), start, partial_from=start)
                self._item.has_speech = True
            return []
        turn = self._turns.feed(end, probability)
        if turn is None:
            return []
        if turn.kind == "start":
            if self._item is not None:
                return []
            start = max(self._audio_start, self._committed_until, turn.sample - self._prefix_samples())
            outputs = self._start_item(start, now)
            self._item.has_speech = True  # type: ignore[union-attr]
            return outputs
        if self._item is None:
            return []
        stop = min(turn.sample + FINAL_TAIL_SAMPLES, self._total)
        item_id = self._item.item_id
        return [Send(ev.SpeechStopped(audio_end_ms=turn.at * 1000 // VAD_RATE, item_id=item_id))] + self._commit(
            stop, speech_end_at=self._arrival(turn.sample), now=now, stopped_by_vad=True
        )

    def _start_item(self, start: int, now: float) -> list[Output]:
        self._item = _Item(ev.new_id("item"), start, partial_from=start)
        return [Send(ev.SpeechStarted(audio_start_ms=start * 1000 // VAD_RATE, item_id=self._item.item_id))]

    def _commit_by_client(self, event: ev.AudioCommit, now: float) -> list[Output]:
        start = self._item.start if self._item is not None else self._uncommitted_start()
        if self._total - start < MIN_COMMIT_SAMPLES:
            return [Send(ev.error_event(
                f"buffer too small: expected at least 100 ms of audio, have {(self._total - start) * 1000 // VAD_RATE} ms",
                "input_audio_buffer_commit_empty", event_id=event.event_id,
            ))]
        if self._item is None:
            self._item = _Item(ev.new_id("item"), start, partial_from=start)
        self._turns.reset()
        return self._commit(self._total, speech_end_at=None, now=now, stopped_by_vad=False) + self._schedule()

    def _commit(self, end: int, *, speech_end_at: float | None, now: float, stopped_by_vad: bool) -> list[Output]:
        item = self._item
        assert item is not None
        self._item = None
        samples_start = self._context_start(item)
        samples = self._audio[samples_start - self._audio_start:end - self._audio_start]
        self._committed_until = end
        self._finals.append(_Final(item, end, samples, samples_start, speech_end_at, now))
        committed = ev.Committed(item_id=item.item_id, previous_item_id=self._previous_item_id)
        self._previous_item_id = item.item_id
        self._trim(end if self.config.turn_detection is None else end - self._prefix_samples())
        return [Send(committed)]

    def _clear(self) -> list[Output]:
        self._item = None
        self._spoken = None  # the cleared audio lies between it and what comes next
        self._committed_until = self._total
        self._turns.reset()
        self._trim(self._total)
        return [Send(ev.Cleared())]

    # -- decoding --------------------------------------------------------------------------------------------

    def _schedule(self) -> list[Output]:
        if self._in_flight is not None or self.closed:
            return []
        while self._finals:
            final = self._finals[0]
            if final.end in final.item.guesses:
                outputs = self._complete(final, final.item.guesses[final.end], None, final.item.voices.get(final.end))
                return outputs + self._schedule()
            return [self._request(final.item, final.samples, final.samples_start, final.end, final=True)]
        item = self._item
        if item is None or not item.has_speech:
            return []
        silence = self._turns.silence_since
        if (silence is not None and self._total - silence >= FINAL_TAIL_SAMPLES
                and item.speculated_end != silence + FINAL_TAIL_SAMPLES):
            item.speculated_end = silence + FINAL_TAIL_SAMPLES
            return [self._decode(item, item.speculated_end, final=True)]
        interval = self.limits.partial_interval_ms * VAD_RATE // 1000
        # No partial while the speaker pauses: there are no new words to hear, and a partial still running when the
        # speculative final is due would hold it up (one decode per session at a time).
        if (silence is None and self._total - item.partial_from >= interval
                and self._total - item.start >= MIN_PARTIAL_SAMPLES):
            item.partial_from = self._total
            return [self._decode(item, self._total, final=False)]
        return []

    def _decode(self, item: _Item, end: int, *, final: bool) -> Decode:
        """Decode the open utterance up to `end` (a view: appends and trims make new arrays, never write in place)."""
        samples_start = self._context_start(item)
        return self._request(item, self._audio[samples_start - self._audio_start:end - self._audio_start],
                             samples_start, end, final=final)

    def _request(self, item: _Item, samples: np.ndarray, samples_start: int, end: int, *, final: bool) -> Decode:
        """Decode `samples` (from `samples_start`) with the previous utterance as left context where it fits."""
        spoken = self._spoken
        if (spoken is not None and samples_start <= spoken.start < item.start
                and item.start - spoken.start <= LEFT_CONTEXT_SAMPLES and end - spoken.start <= MAX_DECODE_SAMPLES):
            from_sample, context_text = spoken.start, spoken.text
        else:
            from_sample, context_text = item.start, ""
        request = DecodeRequest(next(self._jobs), item.item_id, samples[from_sample - samples_start:], final,
                                self.config, end, self._context, item.start - from_sample, context_text,
                                item.has_speech, item.speech_confirmed)
        self._in_flight = request
        return Decode(request)

    def _complete(self, final: _Final, text: str, now: float | None, voice: np.ndarray | None = None) -> list[Output]:
        self._finals.popleft()
        item = final.item
        if not text and not item.agreement.confirmed and self.config.hallucination_guard:
            # Nothing was said (the guard emptied it, and no delta was sent): no `completed`, nothing stored.
            self._spoken = None
            return []
        outputs: list[Output] = []
        delta = item.agreement.finish(text)
        if delta:
            outputs.append(Send(ev.TranscriptionDelta(item_id=item.item_id, delta=delta)))
        self._context = (self._context + " " + text).strip()[-CONTEXT_CHARS:].lstrip()
        self._spoken = _Spoken(item.start, text) if text else None
        duration = (final.end - item.start) / VAD_RATE
        speaker = (self.speakers.label(voice, duration) if self.speakers is not None and voice is not None
                   else None)
        outputs.append(Send(ev.TranscriptionCompleted(
            item_id=item.item_id, transcript=text, usage=ev.Usage(seconds=round(duration, 3)), speaker=speaker,
        )))
        done_at = now if now is not None else final.committed_at
        latency = done_at - final.speech_end_at if final.speech_end_at is not None else None
        outputs.append(Utterance(item.item_id, item.start / VAD_RATE, final.end / VAD_RATE, text, latency, speaker))
        return outputs

    def _delta(self, item: _Item, hypothesis: str) -> list[Output]:
        if any(final.item is item for final in self._finals) or item is self._item:
            delta = item.agreement.update(hypothesis)
            if delta:
                return [Send(ev.TranscriptionDelta(item_id=item.item_id, delta=delta))]
        return []

    # -- helpers ---------------------------------------------------------------------------------------------

    def _item_by_id(self, item_id: str) -> _Item | None:
        if self._item is not None and self._item.item_id == item_id:
            return self._item
        return next((final.item for final in self._finals if final.item.item_id == item_id), None)

    def _decode_audio(self, event: ev.AudioAppend) -> np.ndarray:
        try:
            raw = base64.b64decode(event.audio, validate=True)
        except (binascii.Error, ValueError):
            raise ev.ProtocolError("'audio' is not valid base64", code="invalid_audio", param="audio",
                                   event_id=event.event_id) from None
        if len(raw) > ev.MAX_APPEND_BYTES:
            raise ev.ProtocolError(
                f"one append may carry at most 15 MiB of audio; this one has {len(raw) / 2**20:.1f} MiB",
                code="audio_too_large", param="audio", event_id=event.event_id,
            )
        if len(raw) % 2:
            raise ev.ProtocolError(
                f"'audio' must be whole 16-bit samples (PCM16 LE mono at 24 kHz); got {len(raw)} bytes, an odd number",
                code="invalid_audio", param="audio", event_id=event.event_id,
            )
        return self._resampler(np.frombuffer(raw, dtype="<i2"))

    def _prefix_samples(self) -> int:
        vad = self.config.turn_detection
        return (vad.prefix_padding_ms if vad else 0) * VAD_RATE // 1000

    def _new_detector(self) -> TurnDetector:
        vad = self.config.turn_detection or ev.ServerVad()
        return TurnDetector(vad.threshold, vad.silence_duration_ms)

    def _context_start(self, item: _Item) -> int:
        """Where the audio a decode of `item` may hear begins: up to LEFT_CONTEXT_SAMPLES before it, as kept."""
        return max(self._audio_start, item.start - LEFT_CONTEXT_SAMPLES)

    def _uncommitted_start(self) -> int:
        """Where audio not yet committed or cleared begins (the buffer also keeps left context before it)."""
        return max(self._audio_start, self._committed_until)

    def _trim(self, keep_from: int) -> None:
        """Forget audio before `keep_from` that no open utterance needs (keeping LEFT_CONTEXT_SAMPLES of the past)."""
        keep_from = max(self._audio_start, min(keep_from, self._total - LEFT_CONTEXT_SAMPLES))
        if self._item is not None:
            keep_from = min(keep_from, self._item.start - LEFT_CONTEXT_SAMPLES)
        drop = keep_from - self._audio_start
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_start = keep_from
        while len(self._arrivals) > 1 and self._arrivals[1][0] <= keep_from:
            self._arrivals.popleft()

    def _arrival(self, sample: int) -> float | None:
        """When the audio holding `sample` arrived."""
        for end, at in self._arrivals:
            if end >= sample:
                return at
        return None

    def _close(self, error: ev.ErrorEvent, code: int, reason: str) -> list[Output]:
        self.closed = True
        return [Send(error), Close(code, reason)]

    @property
    def audio_seconds(self) -> float:
        return self._total / VAD_RATE
