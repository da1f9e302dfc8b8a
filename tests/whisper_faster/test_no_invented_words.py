"""Audio without speech gives no text on every path of whisper-faster (synchronous, SSE streaming, jobs), for the
whole non-speech corpus, its held-back part included (tests/non_speech.py); speech with 30 s of silence or noise
between its sentences gives the sentences and nothing in the gaps; `hallucination_guard=false` gives the model's raw
output. (Live sessions: tests/realtime/test_no_invented_words.py.)"""
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
from tests.service_servers import JFK_REFERENCE, Server
from tests.whisper_faster.helpers import word_error_rate

NAMES = corpus_names()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corpus_files(tmp_path_factory)


@pytest.mark.parametrize("name", NAMES)
def test_no_text_synchronously_nor_streamed(http: httpx.Client, clips: dict[str, Path], name: str) -> None:
    assert_no_text(verbose(http, clips[name], **{"timestamp_granularities[]": ["word", "segment"]}), name)
    assert http.post("/v1/audio/transcriptions", files={"file": clips[name].open("rb")}).json() == {
        "text": "", "usage": {"type": "duration", "seconds": 6}}
    assert_no_streamed_text(streamed(http, clips[name]), name)


def test_no_text_from_jobs(http: httpx.Client, clips: dict[str, Path]) -> None:
    jobs = {name: submit_job(http, path) for name, path in clips.items()}
    for name, job_id in jobs.items():
        assert_no_text(job_result(http, job_id), name)


def test_audio_without_speech_is_not_decoded_and_is_counted(server: Server, http: httpx.Client,
                                                            clips: dict[str, Path]) -> None:
    before = suppressed(http.get("/metrics").text, "whisper_faster", "no_speech")
    assert_no_text(verbose(http, clips["digital silence"]), "digital silence")
    assert suppressed(http.get("/metrics").text, "whisper_faster", "no_speech") == before + 1


def test_the_raw_output_is_there_for_who_asks(http: httpx.Client, clips: dict[str, Path]) -> None:
    raw = verbose(http, clips["digital silence"], hallucination_guard="false")
    assert raw["text"].strip(), raw  # what Whisper invents on silence ("You"), as it did before the guard
    form_job = job_result(http, submit_job(http, clips["digital silence"], hallucination_guard="false"))
    assert form_job["text"] == raw["text"]


def test_a_bad_opt_out_value_is_a_400(http: httpx.Client, clips: dict[str, Path]) -> None:
    response = http.post("/v1/audio/transcriptions", files={"file": clips["digital silence"].open("rb")},
                         data={"hallucination_guard": "perhaps"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "hallucination_guard"


@pytest.mark.parametrize("gap", ["silence", "pink noise", "telephone hiss"])
def test_sentences_with_30_s_gaps_give_the_sentences_and_nothing_in_the_gaps(
    http: httpx.Client, clips: dict[str, Path], tmp_path: Path, gap: str
) -> None:
    speech = gapped_jfk(tmp_path, gaps(clips)[gap], gap.replace(" ", "-"))
    body = verbose(http, speech.path, **{"timestamp_granularities[]": ["word", "segment"]})
    assert word_error_rate(JFK_REFERENCE, body["text"]) <= 0.1, body["text"]
    assert_inside(body, speech.spans)
    assert streamed(http, speech.path)[-1]["text"] == body["text"]
