"""Live sessions give no text for audio without speech: the whole non-speech corpus (tests/non_speech.py, held-back part
included) streamed with server VAD, and committed by hand, brings no delta and no `completed` item; speech after it is
transcribed as usual; `hallucination_guard: false` in the session's transcription settings gives the raw output."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from websockets.sync.client import ClientConnection

from tests.invented_words import corpus_files, suppressed
from tests.realtime.audio import RATE, recording_pcm16
from tests.realtime.conftest import next_event, open_socket
from tests.service_servers import JFK_REFERENCE, Server
from tests.whisper_faster.helpers import word_error_rate

COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
CHUNK = 2 * RATE // 10  # 100 ms of PCM16


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corpus_files(tmp_path_factory)


def pcm16(path: Path, trailing_silence: float = 1.0) -> bytes:
    """A clip as the protocol's PCM16 at 24 kHz, with silence after it (so a turn the VAD opened on it ends)."""
    from faster_whisper.audio import decode_audio

    samples = np.concatenate([decode_audio(str(path), sampling_rate=RATE),
                              np.zeros(int(trailing_silence * RATE), dtype=np.float32)])
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def configure(socket: ClientConnection, wait: bool = True, **transcription: object) -> None:
    turn = transcription.pop("turn_detection", {"type": "server_vad"})
    socket.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"language": "en", **transcription}, "turn_detection": turn}}}}))
    while wait and next_event(socket)["type"] != "session.updated":
        pass


def append(socket: ClientConnection, pcm: bytes) -> None:
    for offset in range(0, len(pcm), CHUNK):
        socket.send(json.dumps({"type": "input_audio_buffer.append",
                                "audio": base64.b64encode(pcm[offset:offset + CHUNK]).decode()}))


def until_completed(socket: ClientConnection, count: int = 1, timeout: float = 240,
                    committed_last: bool = False) -> list[dict]:
    """Events until `count` items are completed, or (`committed_last`) until the last item committed is."""
    events: list[dict] = []
    while True:
        events.append(next_event(socket, timeout=timeout))
        assert events[-1]["type"] != "error", events[-1]
        if committed_last:  # the item committed after the last session.updated (events come in order)
            updated = max(index for index, event in enumerate(events) if event["type"] == "session.updated") \
                if any(event["type"] == "session.updated" for event in events) else len(events)
            last = [event["item_id"] for event in events[updated:] if event["type"] == "input_audio_buffer.committed"]
            if last and events[-1]["type"] == COMPLETED and events[-1]["item_id"] == last[-1]:
                return events
        elif sum(event["type"] == COMPLETED for event in events) >= count:
            return events


def test_the_corpus_streamed_with_server_vad_brings_nothing_and_speech_after_it_is_heard(
    realtime_server: Server, clips: dict[str, Path]
) -> None:
    with open_socket(realtime_server) as socket:
        assert next_event(socket)["type"] == "session.created"
        configure(socket)
        noise = b"".join(pcm16(path) for path in clips.values())
        append(socket, noise)
        append(socket, recording_pcm16("jfk.flac"))
        # A last utterance committed by hand: finals come in commit order, so once it is completed, every utterance
        # the VAD found before it has had its final.
        configure(socket, wait=False, turn_detection=None)
        append(socket, recording_pcm16("jfk.flac", trailing_silence=0.3))
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = until_completed(socket, committed_last=True)
    jfk_from_ms = len(noise) * 1000 // (2 * RATE)
    started = {event["item_id"]: event["audio_start_ms"] for event in events
               if event["type"] == "input_audio_buffer.speech_started"}
    in_noise = {item for item, at in started.items() if at < jfk_from_ms - 500}
    said = [event for event in events if event["type"] in (DELTA, COMPLETED) and event["item_id"] in in_noise]
    assert not said, said
    completed = [event for event in events if event["type"] == COMPLETED]
    streamed_jfk = " ".join(event["transcript"] for event in completed[:-1])
    assert word_error_rate(JFK_REFERENCE, streamed_jfk) < 0.25, completed
    assert word_error_rate(JFK_REFERENCE, completed[-1]["transcript"]) < 0.2, completed


def test_manual_commits_of_the_corpus_bring_no_completed_item(realtime_server: Server,
                                                              clips: dict[str, Path]) -> None:
    with realtime_server.client() as http:
        before = suppressed(http.get("/metrics", headers={"Authorization": "Bearer realtime-test-key"}).text,
                            "whisper_faster", "no_speech")
    names = list(clips)
    with open_socket(realtime_server) as socket:
        assert next_event(socket)["type"] == "session.created"
        configure(socket, turn_detection=None)
        committed = []
        for name in names:
            append(socket, pcm16(clips[name], trailing_silence=0.0))
            socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        append(socket, recording_pcm16("jfk.flac", trailing_silence=0.3))
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = until_completed(socket)
        committed = [event["item_id"] for event in events if event["type"] == "input_audio_buffer.committed"]
    assert len(committed) == len(names) + 1
    completed = [event for event in events if event["type"] == COMPLETED]
    assert [event["item_id"] for event in completed] == [committed[-1]], completed
    assert word_error_rate(JFK_REFERENCE, completed[0]["transcript"]) < 0.2, completed
    assert not [event for event in events if event["type"] == DELTA and event["item_id"] != committed[-1]]
    with realtime_server.client() as http:
        after = suppressed(http.get("/metrics", headers={"Authorization": "Bearer realtime-test-key"}).text,
                           "whisper_faster", "no_speech")
    assert after > before  # utterances in which the VAD heard nothing were not decoded


def test_without_the_guard_a_committed_silence_is_completed(realtime_server: Server,
                                                            clips: dict[str, Path]) -> None:
    with open_socket(realtime_server) as socket:
        assert next_event(socket)["type"] == "session.created"
        configure(socket, turn_detection=None, hallucination_guard=False)
        append(socket, pcm16(clips["digital silence"], trailing_silence=0.0))
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert until_completed(socket)[-1]["type"] == COMPLETED


class CountingModel:
    """A CTranslate2 Whisper model that counts its generate calls (the decodings a request really made)."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.generated = 0

    def generate(self, *args: object, **kwargs: object) -> object:
        self.generated += 1
        return self.model.generate(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)


def test_an_utterance_of_music_is_not_decoded_whole(tmp_path: Path) -> None:
    """A VAD blip on a note can open an utterance over music; decoded whole, the plucked notes became "Thank you."
    (tiny.en, beam 5, on an Intel Xeon; on an AMD EPYC the same int8 model wrote nothing for them, so the words are
    not asserted). Until an utterance has given words, only the speech the gate finds in it is decoded: with the guard
    the model is never called on these notes."""
    from faster_whisper import WhisperModel

    from tests.non_speech import corpus
    from whisper_common.model_catalog import embedded_model_dir
    from whisper_common.uploads import decode_audio
    from whisper_faster.models import LoadedModel
    from whisper_faster.realtime.decode import transcribe_utterance
    from whisper_faster.realtime.session import DecodeRequest, SessionConfig

    whisper = WhisperModel(str(embedded_model_dir()), device="cpu", compute_type="int8", cpu_threads=2)
    counting = CountingModel(whisper.model)
    whisper.model = counting
    model = LoadedModel("tiny.en", whisper)
    notes = next(clip for clip in corpus() if clip.name == "synthetic plucked notes")
    notes.write(tmp_path / "notes.wav", 10.0)
    samples = decode_audio(str(tmp_path / "notes.wav")).samples
    reasons: list[str] = []

    def final(**config: object) -> str:
        request = DecodeRequest(1, "item", samples, True, SessionConfig(language="en", **config), len(samples))
        return transcribe_utterance(model, request, reasons.append)

    final(hallucination_guard=False)
    assert counting.generated > 0 and reasons == []  # without the guard the notes are decoded, whatever the words
    counting.generated = 0
    assert final() == ""
    assert counting.generated == 0
    assert reasons == ["no_speech"]
