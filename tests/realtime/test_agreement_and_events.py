"""LocalAgreement and the client-event parser."""
from __future__ import annotations

import pytest

from whisper_faster.realtime import events as ev
from whisper_faster.realtime.agreement import LocalAgreement


def test_a_word_is_sent_once_two_hypotheses_agree_on_it() -> None:
    agreement = LocalAgreement()
    assert agreement.update("Hello") == ""
    assert agreement.update("Hello, world") == "Hello,"
    assert agreement.update("hello world, how") == " world,"
    assert agreement.update("Hello world how are you") == " how"
    assert agreement.text == "Hello, world, how"


def test_a_hypothesis_that_contradicts_sent_words_sends_nothing() -> None:
    agreement = LocalAgreement()
    agreement.update("the cat sat")
    assert agreement.update("the cat sat on") == "the cat sat"
    assert agreement.update("a cat sat on the") == ""
    assert agreement.update("a cat sat on the mat") == ""
    assert agreement.finish("The cat sat on the mat.") == " on the mat."
    assert agreement.finish("Something else entirely") == ""


@pytest.mark.parametrize(
    ("text", "code", "param"),
    [
        ("not json", "invalid_json", None),
        ("[1, 2]", "invalid_event", None),
        ('{"no": "type"}', "invalid_event", "type"),
        ('{"type": "response.create"}', "unknown_event_type", "type"),
        ('{"type": "session.update", "session": {"type": "realtime"}}', "invalid_value", "session.type"),
        ('{"type": "input_audio_buffer.append"}', "invalid_value", "audio"),
        ('{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"threshold": 2}}}}}',
         "invalid_value", "session.audio.input.turn_detection.threshold"),
        ('{"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}}',
         "invalid_value", "session.input_audio_format"),
    ],
)
def test_bad_client_events_are_named(text: str, code: str, param: str | None) -> None:
    with pytest.raises(ev.ProtocolError) as raised:
        ev.parse_client_event(text)
    assert raised.value.code == code
    assert raised.value.param == param
    assert raised.value.message


def test_the_event_id_of_a_bad_event_is_echoed() -> None:
    with pytest.raises(ev.ProtocolError) as raised:
        ev.parse_client_event('{"type": "nope", "event_id": "evt_1"}')
    assert raised.value.event_id == "evt_1"
