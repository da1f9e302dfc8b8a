"""The sans-io session state machine: turn detection, partials that are never taken back, finals, manual commits,
bad audio, idle and lag. A loudness VAD and a scripted decoder stand in for Silero and Whisper (the model is tested
through the real server in test_server.py), and time is passed in, so nothing sleeps."""
from __future__ import annotations

import base64

import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from tests.realtime.audio import LoudnessVad, chunks, silence, tone
from whisper_faster.realtime import events as ev
from whisper_faster.realtime.session import Close, Decode, DecodeRequest, Limits, RealtimeSession, Send, Utterance

WORDS = "one two three four five six seven eight nine ten eleven twelve".split()
SDK_EVENT = TypeAdapter(RealtimeServerEvent)


def scripted(request: DecodeRequest) -> str:
    """Two words per second of audio; finals also end with a full stop (the final may correct the tail)."""
    count = max(1, int((request.audio_seconds - request.context_seconds) * 2))
    text = " ".join(WORDS[:count])
    return text + "." if request.final else text


class Driver:
    """Feeds audio at real-time pace (by the clock it passes in) and answers each decode at the next step."""

    def __init__(self, limits: Limits = Limits(), beta: bool = False) -> None:
        self.now = 0.0
        self.session = RealtimeSession("sess_test", limits, LoudnessVad(), beta=beta, now=self.now)
        self.outputs: list = list(self.session.start())
        self.decodes: list[DecodeRequest] = []

    def send(self, event: ev.SessionUpdate | ev.BetaSessionUpdate | ev.AudioAppend | ev.AudioCommit | ev.AudioClear):
        self._take(self.session.handle(event, self.now))

    def audio(self, samples: np.ndarray, answer: bool = True) -> None:
        for chunk in chunks(samples):
            self.now += 0.1
            self._take(self.session.handle(ev.AudioAppend(type="input_audio_buffer.append", audio=chunk), self.now))
            if answer:
                self.answer()

    def answer(self) -> None:
        while self.decodes:
            request = self.decodes.pop(0)
            self._take(self.session.decoded(request, scripted(request), self.now))

    def _take(self, outputs: list) -> None:
        for output in outputs:
            if isinstance(output, Decode):
                self.decodes.append(output.request)
        self.outputs.extend(outputs)

    def events(self, kind: str | None = None) -> list[ev.ServerEvent]:
        sent = [output.event for output in self.outputs if isinstance(output, Send)]
        return [event for event in sent if kind is None or event.type == kind]

    def requests(self) -> list[DecodeRequest]:
        return [output.request for output in self.outputs if isinstance(output, Decode)]


def test_every_event_parses_as_the_openai_sdks_server_event() -> None:
    driver = Driver()
    driver.send(ev.parse_client_event('{"type": "session.update", "session": {"type": "transcription"}}'))
    driver.audio(np.concatenate([silence(0.5), tone(2.0), silence(1.0)]))
    kinds = [event.type for event in driver.events()]
    assert kinds[:2] == ["session.created", "session.updated"]
    for event in driver.events():
        parsed = SDK_EVENT.validate_python(event.model_dump())
        assert parsed.type == event.type


def test_speech_gives_started_partials_stopped_committed_completed_in_order() -> None:
    driver = Driver()
    driver.audio(np.concatenate([silence(1.0), tone(3.0), silence(1.0)]))
    kinds = [event.type for event in driver.events()]
    started = driver.events("input_audio_buffer.speech_started")
    stopped = driver.events("input_audio_buffer.speech_stopped")
    assert len(started) == len(stopped) == 1
    # Speech began at 1.0 s; the item starts prefix_padding_ms (300) earlier, to a 32 ms window.
    assert started[0].audio_start_ms == pytest.approx(700, abs=40)
    assert stopped[0].audio_end_ms == pytest.approx(4000 + 500, abs=80)
    order = [kinds.index(k) for k in ("input_audio_buffer.speech_started",
                                      "conversation.item.input_audio_transcription.delta",
                                      "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                                      "conversation.item.input_audio_transcription.completed")]
    assert order == sorted(order), kinds
    completed = driver.events("conversation.item.input_audio_transcription.completed")[0]
    assert completed.item_id == started[0].item_id
    assert completed.transcript.endswith(".")


def test_deltas_are_append_only_and_the_final_completes_them() -> None:
    driver = Driver()
    driver.audio(np.concatenate([silence(0.5), tone(4.0), silence(1.0)]))
    deltas = "".join(event.delta for event in driver.events("conversation.item.input_audio_transcription.delta"))
    completed = driver.events("conversation.item.input_audio_transcription.completed")[0].transcript
    # Confirmed words came while speaking, and the concatenation is the final text: nothing was taken back.
    assert len(driver.events("conversation.item.input_audio_transcription.delta")) >= 3
    assert deltas == completed


def test_a_final_that_disagrees_with_the_deltas_is_sent_whole_in_completed_and_no_delta_contradicts() -> None:
    # Partials agree on "what you" while "your" is still being spoken; the final, decoded afresh from the whole
    # utterance, hears "what your country": it is not forced to begin with the words already sent.
    driver = Driver()

    def answer() -> None:
        while driver.decodes:
            request = driver.decodes.pop(0)
            text = "what your country." if request.final else "what you"
            driver._take(driver.session.decoded(request, text, driver.now))

    driver.answer = answer  # type: ignore[method-assign]
    driver.audio(np.concatenate([silence(0.5), tone(3.0), silence(1.0)]))
    deltas = [event.delta for event in driver.events("conversation.item.input_audio_transcription.delta")]
    completed = driver.events("conversation.item.input_audio_transcription.completed")
    assert "".join(deltas) == "what you"
    assert [event.transcript for event in completed] == ["what your country."]


def test_no_partial_starts_while_the_speaker_pauses() -> None:
    driver = Driver(Limits(partial_interval_ms=200))
    driver.audio(np.concatenate([silence(0.5), tone(2.0), silence(0.45)]))  # a pause shorter than the VAD's 500 ms
    pause_starts = 2.5 * 16_000
    assert not [request for request in driver.requests()
                if not request.final and request.end > pause_starts + 0.1 * 16_000]
    assert [request for request in driver.requests() if request.final]  # the speculative final did start


def test_partials_are_bounded_one_decode_at_a_time_and_at_most_every_interval() -> None:
    driver = Driver(Limits(partial_interval_ms=500))
    # Nobody answers the decodes while 3 s of speech arrive: the session must not queue more work.
    driver.audio(np.concatenate([silence(0.5), tone(3.0)]), answer=False)
    assert len(driver.decodes) == 1
    driver.answer()
    partials = [r for r in driver.requests() if not r.final]
    assert len(partials) == 2  # the one that waited, then one for the audio that came meanwhile


def test_the_speculative_final_is_reused_when_speech_stops_where_it_was_cut() -> None:
    driver = Driver()
    driver.audio(np.concatenate([silence(0.5), tone(2.0), silence(1.0)]))
    finals = [request for request in driver.requests() if request.final]
    assert len(finals) == 1, finals  # started during the pause, and the commit needed no second decode
    assert len(driver.events("conversation.item.input_audio_transcription.completed")) == 1
    utterance = next(output for output in driver.outputs if isinstance(output, Utterance))
    # The transcript was ready when the VAD's silence ended (~0.5 s after the last voiced audio).
    assert utterance.latency_seconds is not None and utterance.latency_seconds <= 0.7


def test_resumed_speech_keeps_one_utterance_and_two_pauses_make_two() -> None:
    driver = Driver()
    driver.audio(np.concatenate([tone(1.0), silence(0.3), tone(1.0), silence(1.0), tone(1.0), silence(1.0)]))
    completed = driver.events("conversation.item.input_audio_transcription.completed")
    assert len(completed) == 2
    committed = driver.events("input_audio_buffer.committed")
    assert committed[1].previous_item_id == committed[0].item_id


def test_turn_detection_null_means_manual_commits() -> None:
    driver = Driver()
    driver.send(ev.parse_client_event(
        '{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"turn_detection": null}}}}'
    ))
    assert driver.events("session.updated")[0].session["audio"]["input"]["turn_detection"] is None
    driver.audio(np.concatenate([tone(1.5), silence(1.0)]))
    assert not driver.events("input_audio_buffer.speech_started")
    assert not driver.events("input_audio_buffer.committed")
    driver.send(ev.AudioCommit(type="input_audio_buffer.commit"))
    driver.answer()
    assert len(driver.events("input_audio_buffer.committed")) == 1
    completed = driver.events("conversation.item.input_audio_transcription.completed")
    assert completed and completed[0].usage.seconds == pytest.approx(2.5, abs=0.05)


def test_manual_commits_each_hold_only_the_audio_since_the_last_one_and_hear_it_as_context() -> None:
    driver = Driver()
    driver.send(ev.parse_client_event(
        '{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"turn_detection": null}}}}'
    ))
    for _ in range(2):
        driver.audio(np.concatenate([tone(1.5), silence(0.5)]))
        driver.send(ev.AudioCommit(type="input_audio_buffer.commit"))
        driver.answer()
    completed = driver.events("conversation.item.input_audio_transcription.completed")
    assert [event.usage.seconds for event in completed] == pytest.approx([2.0, 2.0], abs=0.05)
    second = [request for request in driver.requests() if request.final][-1]
    assert second.context_seconds == pytest.approx(2.0, abs=0.05) and second.context_text == completed[0].transcript


def test_a_decode_hears_the_previous_utterance_as_left_context_and_only_the_new_words_come_back() -> None:
    driver = Driver()
    driver.audio(np.concatenate([silence(0.5), tone(2.0), silence(1.0), tone(2.0), silence(1.0)]))
    completed = driver.events("conversation.item.input_audio_transcription.completed")
    assert len(completed) == 2
    second_item = completed[1].item_id
    second = [request for request in driver.requests() if request.item_id == second_item]
    assert second and all(request.context_text == completed[0].transcript for request in second)
    # The context is the first utterance from its start (with its padding) up to where the second begins.
    assert all(2.4 <= request.context_seconds <= 3.4 for request in second)
    assert second[-1].without_context(completed[0].transcript + " one two three four.") == "one two three four."


def test_no_left_context_after_a_clear_or_when_the_previous_utterance_is_far_back() -> None:
    driver = Driver()
    driver.audio(np.concatenate([silence(0.5), tone(1.0), silence(1.0)]))
    driver.send(ev.AudioClear(type="input_audio_buffer.clear"))
    driver.audio(np.concatenate([tone(1.0), silence(1.0)]))
    assert len(driver.events("conversation.item.input_audio_transcription.completed")) == 2
    assert all(request.context_text == "" for request in driver.requests()[-2:])

    driver = Driver()
    driver.audio(np.concatenate([silence(0.5), tone(1.0), silence(11.0), tone(1.0), silence(1.0)]))
    last = driver.events("conversation.item.input_audio_transcription.completed")[-1].item_id
    assert all(request.context_samples == 0 for request in driver.requests() if request.item_id == last)


def test_committing_an_empty_buffer_is_an_error_event() -> None:
    driver = Driver()
    driver.send(ev.parse_client_event('{"type": "input_audio_buffer.commit", "event_id": "c1"}'))
    error = driver.events("error")[0].error
    assert error.code == "input_audio_buffer_commit_empty" and error.event_id == "c1"


def test_clear_drops_the_open_utterance() -> None:
    driver = Driver()
    driver.audio(tone(1.0))
    driver.send(ev.AudioClear(type="input_audio_buffer.clear"))
    driver.audio(silence(1.0))
    assert driver.events("input_audio_buffer.cleared")
    assert not driver.events("input_audio_buffer.committed")


def test_beta_session_update_is_answered_in_the_beta_form() -> None:
    driver = Driver(beta=True)
    assert driver.events()[0].type == "transcription_session.created"
    driver.send(ev.parse_client_event(
        '{"type": "transcription_session.update", "session": {"input_audio_format": "pcm16", '
        '"input_audio_transcription": {"model": "whisper-1", "language": "en"}, "turn_detection": {"type": '
        '"server_vad", "silence_duration_ms": 800}}}'
    ))
    session = driver.events("transcription_session.updated")[0].session
    assert session["input_audio_format"] == "pcm16"
    assert session["input_audio_transcription"]["language"] == "en"
    assert session["turn_detection"]["silence_duration_ms"] == 800
    assert driver.session.config.turn_detection.threshold == 0.5  # defaults kept for fields not sent


@pytest.mark.parametrize(
    ("audio", "code"),
    [("not base64!", "invalid_audio"), (base64.b64encode(b"\x00\x01\x02").decode(), "invalid_audio")],
)
def test_bad_audio_raises_a_protocol_error_naming_it(audio: str, code: str) -> None:
    driver = Driver()
    with pytest.raises(ev.ProtocolError) as raised:
        driver.send(ev.AudioAppend(type="input_audio_buffer.append", audio=audio))
    assert raised.value.code == code and raised.value.param == "audio"


def test_idle_session_is_closed_with_an_error_event() -> None:
    driver = Driver(Limits(idle_seconds=10))
    driver.audio(silence(1.0))
    assert driver.session.tick(driver.now + 5) == []
    outputs = driver.session.tick(driver.now + 10)
    assert outputs[0].event.error.code == "idle_timeout"
    assert outputs[1] == Close(1000, "idle timeout")
    assert driver.session.closed


def test_a_session_whose_finals_lag_is_closed_with_1013() -> None:
    driver = Driver(Limits(max_lag_seconds=3))
    driver.audio(np.concatenate([tone(1.0), silence(1.0)]), answer=False)
    assert driver.session.tick(driver.now + 1) == []
    outputs = driver.session.tick(driver.now + 5)
    assert outputs[0].event.error.code == "server_overloaded"
    assert outputs[1].code == 1013


def test_long_speech_is_cut_at_the_longest_utterance() -> None:
    driver = Driver(Limits(max_utterance_seconds=4))
    driver.audio(np.concatenate([tone(9.0), silence(1.0)]))
    completed = driver.events("conversation.item.input_audio_transcription.completed")
    assert len(completed) == 3
    # checked once per 100 ms append (a decode also hears the utterance before, as context)
    assert all(request.audio_seconds - request.context_seconds <= 4.1 for request in driver.requests())


def test_a_final_that_cannot_be_decoded_fails_its_item_and_the_session_goes_on() -> None:
    driver = Driver()
    driver.audio(np.concatenate([tone(1.0), silence(1.0)]), answer=False)
    while driver.decodes:
        request = driver.decodes.pop(0)
        error = ev.ErrorDetail(type="server_error", code="server_busy", message="the server is busy")
        driver._take(driver.session.decode_failed(request, error, driver.now))
    failed = driver.events("conversation.item.input_audio_transcription.failed")
    assert len(failed) == 1 and failed[0].error.code == "server_busy"
    assert failed[0].item_id == driver.events("input_audio_buffer.committed")[0].item_id
    driver.audio(np.concatenate([tone(1.0), silence(1.0)]))
    assert len(driver.events("conversation.item.input_audio_transcription.completed")) == 1
