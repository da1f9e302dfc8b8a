"""Speaker labels of a live session, sans-io: SessionSpeakers over real d-vectors of the fixtures' voices (dev00 and
dev01: MEE009 and MEE012 of one AMI meeting; jfk), and the session putting the label on `completed` and on the stored
utterance (the scripted decoder of test_session answers; the voice is a real d-vector handed in as the route would)."""
from __future__ import annotations

import numpy as np
import pytest
from openai.types.realtime import ConversationItemInputAudioTranscriptionCompletedEvent

from tests.realtime.audio import silence, tone
from tests.realtime.test_session import Driver, scripted
from tests.support import fixture_path
from whisper_common.speakers.matching import Reference, mean_embedding
from whisper_faster.realtime import events as ev
from whisper_faster.realtime.session import Utterance
from whisper_faster.realtime.speakers import SessionSpeakers
from whisper_faster.settings import REALTIME_CLUSTER_THRESHOLD as CLUSTER
from whisper_faster.settings import REALTIME_SPEAKER_THRESHOLD as LIVE

RATE = 16_000
# Utterances of each voice in dev00 (debug.development.rttm), and enrolment from dev01 (never the same audio).
DEV00 = {"Maria": [(1.5, 4.5), (4.5, 8.0), (8.0, 13.1), (21.95, 26.2)], "Tom": [(13.2, 16.9), (26.2, 28.3)]}
DEV01 = {"Maria": [(7.0, 11.8)], "Tom": [(4.3, 6.8)]}


@pytest.fixture(scope="module")
def voices() -> dict[str, list[np.ndarray]]:
    from whisper_common.speakers.encoder import SpeakerEncoder
    from whisper_common.uploads import decode_audio

    encoder = SpeakerEncoder()
    audio = {name: decode_audio(str(fixture_path(f"{name}.wav"))).samples for name in ("dev00", "dev01")}
    cut = lambda name, a, b: audio[name][int(a * RATE):int(b * RATE)]  # noqa: E731
    found = {f"{who} live": [encoder.utterance(cut("dev00", a, b)) for a, b in spans] for who, spans in DEV00.items()}
    found |= {f"{who} enrolled": [encoder.utterance(cut("dev01", a, b)) for a, b in spans] for who, spans in DEV01.items()}
    found["JFK live"] = [encoder.utterance(decode_audio(str(fixture_path("jfk.flac"))).samples[a * RATE:(a + 3) * RATE])
                         for a in (0, 4, 8)]
    return found


def reference(voices: dict[str, list[np.ndarray]], who: str) -> Reference:
    return Reference(who, mean_embedding(voices[f"{who} enrolled"]), f"spk_{who.lower()}")


def test_a_voiceprint_names_its_voice_and_unknown_voices_get_stable_letters(voices: dict) -> None:
    speakers = SessionSpeakers([reference(voices, "Maria")], threshold=LIVE, cluster_threshold=CLUSTER)
    order = [("Maria", 2), ("JFK", 0), ("Tom", 0), ("Maria", 3), ("JFK", 1), ("Tom", 1), ("JFK", 2)]
    labels = [speakers.label(voices[f"{who} live"][index]) for who, index in order]
    by_voice: dict[str, set[str]] = {}
    for (who, _), label in zip(order, labels):
        by_voice.setdefault(who, set()).add(label)
    assert by_voice["Maria"] == {"Maria"}
    assert by_voice["JFK"] == {"A"} and by_voice["Tom"] == {"B"}, labels  # letters in order of first appearance


def test_an_absent_voiceprint_names_nobody(voices: dict) -> None:
    speakers = SessionSpeakers([reference(voices, "Tom")], threshold=LIVE, cluster_threshold=CLUSTER)
    labels = [speakers.label(vector) for vector in voices["JFK live"] + voices["Maria live"][2:]]
    assert "Tom" not in labels


def test_completed_carries_the_speaker_and_the_utterance_keeps_it(voices: dict) -> None:
    driver = Driver()
    driver.session.speakers = SessionSpeakers([reference(voices, "Tom")], threshold=LIVE, cluster_threshold=CLUSTER)
    spoken = iter([voices["Tom live"][0], voices["JFK live"][0]])
    voice_of: dict[str, np.ndarray] = {}

    def answer() -> None:
        while driver.decodes:
            request = driver.decodes.pop(0)
            voice = voice_of.setdefault(request.item_id, next(spoken)) if request.final else None
            driver._take(driver.session.decoded(request, scripted(request), driver.now, voice))

    driver.answer = answer  # type: ignore[method-assign]
    for _ in range(2):
        driver.audio(np.concatenate([tone(2.0), silence(1.2)]))
    completed = driver.events("conversation.item.input_audio_transcription.completed")
    assert [event.speaker for event in completed] == ["Tom", "A"]  # type: ignore[union-attr]
    for event in completed:  # the extension field is tolerated by the SDK's type, and kept
        parsed = ConversationItemInputAudioTranscriptionCompletedEvent.model_validate_json(ev.to_wire(event))
        assert parsed.model_dump()["speaker"] == event.speaker  # type: ignore[union-attr]
    stored = [output.speaker for output in driver.outputs if isinstance(output, Utterance)]
    assert stored == ["Tom", "A"]


def test_without_labels_completed_has_no_speaker_field() -> None:
    driver = Driver()
    driver.audio(np.concatenate([tone(2.0), silence(1.2)]))
    completed = driver.events("conversation.item.input_audio_transcription.completed")
    assert completed and '"speaker"' not in ev.to_wire(completed[0])
