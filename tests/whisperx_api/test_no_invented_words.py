"""Audio without speech gives no text on every path of whisperx (`/transcribe`, the OpenAI route, its SSE stream,
jobs), for the whole non-speech corpus, its held-back part included (tests/non_speech.py); speech with 30 s of
silence or noise between its sentences gives the sentences and nothing in the gaps; the AMI excerpts through the
batched decoding have no run of a word or phrase repeated more than four times."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.invented_words import (
    assert_inside,
    assert_no_streamed_text,
    assert_no_text,
    corpus_files,
    corpus_names,
    gapped_jfk,
    gaps,
    job_result,
    streamed,
    submit_job,
    suppressed,
    verbose,
)
from tests.repeats import longest_repeat
from tests.service_servers import JFK_REFERENCE
from tests.support import fixture_path
from tests.whisper_faster.helpers import word_error_rate

NAMES = corpus_names()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corpus_files(tmp_path_factory)


@pytest.mark.parametrize("name", NAMES)
def test_no_text_on_transcribe_the_openai_route_and_its_stream(http: httpx.Client, clips: dict[str, Path],
                                                               name: str) -> None:
    assert_no_text(verbose(http, clips[name], route="/transcribe"), name)
    assert_no_text(verbose(http, clips[name], **{"timestamp_granularities[]": ["word", "segment"]}), name)
    assert_no_streamed_text(streamed(http, clips[name]), name)


def test_no_text_from_jobs(http: httpx.Client, clips: dict[str, Path]) -> None:
    jobs = {name: submit_job(http, path) for name, path in clips.items()}
    for name, job_id in jobs.items():
        assert_no_text(job_result(http, job_id), name)


def test_audio_without_speech_is_counted(http: httpx.Client, clips: dict[str, Path]) -> None:
    before = suppressed(http.get("/metrics").text, "whisperx", "no_speech")
    assert_no_text(verbose(http, clips["digital silence"], route="/transcribe"), "digital silence")
    assert suppressed(http.get("/metrics").text, "whisperx", "no_speech") == before + 1


@pytest.mark.parametrize("gap", ["silence", "pink noise", "telephone hiss"])
def test_sentences_with_30_s_gaps_give_the_sentences_and_nothing_in_the_gaps(
    http: httpx.Client, clips: dict[str, Path], tmp_path: Path, gap: str
) -> None:
    speech = gapped_jfk(tmp_path, gaps(clips)[gap], gap.replace(" ", "-"), flac=True)
    body = verbose(http, speech.path, route="/transcribe")
    assert word_error_rate(JFK_REFERENCE, " ".join(segment["text"] for segment in body["segments"])) <= 0.1, body
    assert_inside(body, speech.spans)


@pytest.mark.parametrize("name", ["dev00.wav", "dev01.wav"])
def test_the_ami_excerpts_have_no_loop(http: httpx.Client, name: str) -> None:
    body = verbose(http, fixture_path(name), **{"timestamp_granularities[]": ["word", "segment"]})
    assert longest_repeat(body["text"])[0] <= 4, body["text"]
    assert len(body["words"]) > 30


def test_speech_the_batched_decoding_leaves_out_is_decoded_again(http: httpx.Client, tmp_path: Path) -> None:
    """jfk's sentence, 0.5 s of silence, stereo_diarization.wav (5 s, as the 10-minute recording of the speech
    benchmark joins them): the batched pipeline decodes the one window once and writes jfk's sentence only (the raw
    output, opt-out); with the guard the 5 s it left without words are decoded again on their own."""
    import numpy as np

    from tests.invented_words import SAMPLE_RATE, _write
    from whisper_common.uploads import decode_audio

    jfk, other = (decode_audio(str(fixture_path(name))).samples for name in ("jfk.flac", "stereo_diarization.wav"))
    path = tmp_path / "jfk-then-stereo.wav"
    _write(path, np.concatenate([jfk, np.zeros(SAMPLE_RATE // 2, dtype=np.float32), other]))
    second_start = (len(jfk) + SAMPLE_RATE // 2) / SAMPLE_RATE

    def words_after(body: dict) -> list[str]:
        return [word["word"] for segment in body["segments"] for word in segment["words"]
                if word["start"] >= second_start - 0.5]

    raw = verbose(http, path, route="/transcribe", hallucination_guard="false")
    guarded = verbose(http, path, route="/transcribe")
    assert len(words_after(raw)) <= 2, raw  # the decoding this guards against: the second piece left out
    assert len(words_after(guarded)) >= 10, guarded
    first = " ".join(segment["text"] for segment in guarded["segments"] if segment["start"] < second_start - 0.5)
    assert word_error_rate(JFK_REFERENCE, first) <= 0.1, guarded


def test_the_opt_out_is_accepted_on_every_form(http: httpx.Client, clips: dict[str, Path]) -> None:
    for route in ("/transcribe", "/v1/audio/transcriptions"):
        body = verbose(http, fixture_path("jfk.flac"), route=route, hallucination_guard="false")
        text = body.get("text") or " ".join(segment["text"] for segment in body["segments"])
        assert word_error_rate(JFK_REFERENCE, text) <= 0.1
    refused = http.post("/transcribe", files={"file": clips["digital silence"].open("rb")},
                        data={"hallucination_guard": "perhaps"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "hallucination_guard"
