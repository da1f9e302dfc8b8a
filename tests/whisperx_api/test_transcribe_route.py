"""`POST /transcribe`: the WhisperX JSON shape, subtitle and text formats with speakers, accuracy, speaker bounds."""
from __future__ import annotations

import httpx

from tests.service_servers import JFK_REFERENCE
from tests.support import fixture_path
from tests.whisper_faster.helpers import assert_openai_error, cue_times, word_error_rate


def _post(http: httpx.Client, name: str, **data: str) -> httpx.Response:
    with fixture_path(name).open("rb") as audio:
        return http.post("/transcribe", files={"file": (name, audio)}, data=data)


def test_jfk_json_shape_and_wer(http: httpx.Client) -> None:
    response = _post(http, "jfk.flac")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"language", "segments", "alignment", "diarization"}
    assert body["language"] == "en"
    # Offline (no cached wav2vec2 model, no download host) this is the cross-attention fallback.
    assert body["alignment"] in ("wav2vec2", "whisper-cross-attention")
    assert body["diarization"] == "none"
    text = " ".join(segment["text"] for segment in body["segments"])
    wer = word_error_rate(JFK_REFERENCE, text)
    print(f"\njfk.flac WER {wer:.1%}: {text}")
    assert wer <= 0.10
    for segment in body["segments"]:
        assert set(segment) == {"start", "end", "text", "speaker", "words"}
        assert segment["speaker"] is None
        assert 0 <= segment["start"] < segment["end"] <= 11.1
        for word in segment["words"]:
            assert set(word) == {"word", "start", "end", "score", "speaker"}
            assert segment["start"] <= word["start"] < word["end"] <= segment["end"]
            assert 0 <= word["score"] <= 1


def test_diarized_json_speakers(http: httpx.Client) -> None:
    body = _post(http, "sample.wav", diarize="true").json()
    assert body["diarization"] == "embedded"
    speakers = {segment["speaker"] for segment in body["segments"]}
    assert speakers == {"SPEAKER_00", "SPEAKER_01"}
    assert body["segments"][0]["speaker"] == "SPEAKER_00"  # labels in order of first appearance
    for segment in body["segments"]:
        assert all(word["speaker"] == segment["speaker"] for word in segment["words"])


def test_srt_vtt_and_text_carry_speakers(http: httpx.Client) -> None:
    srt = _post(http, "sample.wav", diarize="true", response_format="srt", min_speakers="2", max_speakers="2")
    assert srt.status_code == 200 and srt.headers["content-type"].startswith("application/x-subrip")
    cues = [line for line in srt.text.splitlines() if line.startswith("[SPEAKER_")]
    assert cues and {line.split("]")[0] + "]" for line in cues} == {"[SPEAKER_00]", "[SPEAKER_01]"}
    assert all(end <= 30.1 for _, end in cue_times(srt.text, ","))

    vtt = _post(http, "sample.wav", diarize="true", response_format="vtt")
    assert vtt.text.startswith("WEBVTT") and "[SPEAKER_01] " in vtt.text
    assert cue_times(vtt.text, ".")

    text = _post(http, "sample.wav", diarize="true", response_format="text")
    lines = text.text.strip().splitlines()
    assert lines[0].startswith("[SPEAKER_00] ") and any(line.startswith("[SPEAKER_01] ") for line in lines)


def test_text_without_diarization_has_no_speaker(http: httpx.Client) -> None:
    response = _post(http, "jfk.flac", response_format="text")
    assert response.status_code == 200 and "[SPEAKER" not in response.text
    assert word_error_rate(JFK_REFERENCE, response.text) <= 0.10


def test_speaker_bounds_are_honoured(http: httpx.Client) -> None:
    body = _post(http, "sample.wav", diarize="true", min_speakers="3", max_speakers="3").json()
    assert len({segment["speaker"] for segment in body["segments"]}) <= 3
    body = _post(http, "sample.wav", diarize="true", max_speakers="1").json()
    assert {segment["speaker"] for segment in body["segments"]} == {"SPEAKER_00"}


def test_min_speakers_above_max_is_400(http: httpx.Client) -> None:
    response = _post(http, "sample.wav", diarize="true", min_speakers="3", max_speakers="2")
    error = assert_openai_error(response, 400, "min_speakers")
    assert "max_speakers" in error["message"]
    assert _post(http, "jfk.flac").status_code == 200


def test_explicit_language_and_unknown_format(http: httpx.Client) -> None:
    assert _post(http, "jfk.flac", language="en").json()["language"] == "en"
    assert_openai_error(_post(http, "jfk.flac", response_format="verbose_json"), 400, "response_format")
    assert_openai_error(_post(http, "jfk.flac", language="fr"), 400, "language")  # tiny.en is English-only


def test_silence_is_an_empty_transcript(http: httpx.Client) -> None:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(b"\x00\x00" * 16000 * 3)
    response = http.post("/transcribe", files={"file": ("silence.wav", buffer.getvalue(), "audio/wav")}, data={"diarize": "true"})
    assert response.status_code == 200, response.text
    assert response.json()["segments"] == []
