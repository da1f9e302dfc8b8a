"""faster-whisper's CTranslate2 calls batched across requests (whisper_common.batching.ctranslate2_ops) on the real
embedded tiny.en: the same words as each request decoded alone, ops of different requests in one CTranslate2 call, a
batch that CTranslate2 refuses re-run op by op, and a cancelled request leaving nothing queued."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import jiwer
import numpy as np
import pytest

from tests.support import fixture_path
from whisper_common.batching import BatchScheduler, Cancelled, Priority
from whisper_common.batching.ctranslate2_ops import GenerateKey, op_name, request_model, run_whisper_ops
from whisper_common.batching.recording import RecordingDecoder
from whisper_common.uploads import decode_audio

CLIPS = ("jfk.flac", "sample.wav", "dev00.wav")


@pytest.fixture(scope="module")
def whisper():  # type: ignore[no-untyped-def]
    from faster_whisper import WhisperModel

    from whisper_common.model_catalog import embedded_model_dir

    return WhisperModel(str(embedded_model_dir()), device="cpu", compute_type="int8", cpu_threads=2)


@pytest.fixture(scope="module")
def audio() -> dict[str, np.ndarray]:
    return {name: decode_audio(str(fixture_path(name))).samples for name in CLIPS}


@pytest.fixture()
def scheduler() -> Iterator[BatchScheduler]:
    scheduler = BatchScheduler(run_whisper_ops, batch_size=8, max_wait=0.2, op_name=op_name)
    yield scheduler
    scheduler.close()


def text(segments) -> str:  # type: ignore[no-untyped-def]
    return " ".join(segment.text.strip() for segment in segments)


def test_requests_decoded_together_say_what_they_say_alone(whisper, audio, scheduler: BatchScheduler) -> None:  # type: ignore[no-untyped-def]
    alone = {name: text(whisper.transcribe(samples, language="en", temperature=0.0)[0]) for name, samples in audio.items()}
    together: dict[str, str] = {}
    barrier = threading.Barrier(len(audio))

    def transcribe(name: str) -> None:
        with scheduler.opened(Priority.SYNC, name) as stream:
            model = request_model(whisper, stream)
            barrier.wait(10)
            together[name] = text(model.transcribe(audio[name], language="en", temperature=0.0)[0])

    threads = [threading.Thread(target=transcribe, args=(name,)) for name in audio]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    for name in audio:
        assert jiwer.wer(alone[name], together[name]) <= 0.05, (alone[name], together[name])
    assert scheduler.stats.by_op["encode"][1] >= len(audio)
    assert scheduler.stats.largest >= 2, scheduler.stats  # at least one CTranslate2 call served two requests
    assert scheduler.queued == 0 and scheduler.open_streams == 0


def test_a_batch_ctranslate2_refuses_is_rerun_op_by_op(whisper, audio, scheduler: BatchScheduler) -> None:  # type: ignore[no-untyped-def]
    """An op whose two prompts disagree on their task tokens makes CTranslate2 refuse the whole merged call; the other
    ops of the batch are answered from their own call."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    features = pad_or_trim(whisper.feature_extractor(audio["jfk.flac"])[..., :-1])[None]
    encoded = np.asarray(whisper.model.encode(__import__("ctranslate2").StorageView.from_array(features), to_cpu=True))
    tokenizer = Tokenizer(whisper.hf_tokenizer, False, task="transcribe", language="en")
    prompt = whisper.get_prompt(tokenizer, [], without_timestamps=True)
    kwargs = {"beam_size": 1, "max_length": 60, "return_scores": True}
    key = GenerateKey(whisper.model, encoded.shape[1:], (0, len(prompt)), tuple(sorted(kwargs.items())))
    bad_prompts = [prompt, prompt[:-1]]  # <|notimestamps|> in one, not in the other
    scheduler.max_wait = 1.0
    with scheduler.opened(Priority.SYNC) as first, scheduler.opened(Priority.SYNC) as second:
        good = first.submit(key, (encoded, [prompt], kwargs))
        bad = second.submit(key, (np.concatenate([encoded, encoded]), bad_prompts, kwargs), rows=2)
        result = good.result(120)
        with pytest.raises(ValueError, match="task tokens"):
            bad.result(120)
    assert "ask not what your country" in tokenizer.decode(result[0].sequences_ids[0])
    assert scheduler.queued == 0


def test_a_cancelled_request_stops_and_leaves_nothing_queued(whisper, audio, scheduler: BatchScheduler) -> None:  # type: ignore[no-untyped-def]
    recording = np.concatenate([audio["sample.wav"], audio["dev00.wav"]] * 3)  # 3 minutes: several windows
    blocks = [recording[start : start + 80_000] for start in range(0, len(recording), 80_000)]
    decoder = RecordingDecoder(scheduler, ThreadPoolExecutor(8), in_flight=4)
    cancel = threading.Event()
    outcome: dict[str, object] = {}

    def long_request() -> None:
        with scheduler.opened(Priority.JOB, "long") as stream:
            try:
                for segment in decoder.transcribe(whisper, stream, blocks, {"language": "en"}, cancel=cancel):
                    outcome.setdefault("first", segment.text)
                    cancel.set()  # the job is canceled after its first segment
            except Cancelled:
                outcome["cancelled"] = True

    thread = threading.Thread(target=long_request)
    thread.start()
    with scheduler.opened(Priority.SYNC, "short") as stream:
        short = text(request_model(whisper, stream).transcribe(audio["jfk.flac"], language="en")[0])
    thread.join(300)
    assert outcome.get("cancelled") and outcome.get("first")
    assert "ask not what your country can do for you" in short.lower().replace(",", "")
    decoder.executor.shutdown(wait=True)
    assert scheduler.queued == 0 and scheduler.open_streams == 0


def test_a_call_of_several_rows_is_one_op_per_row_merged_back_into_one_batch(whisper, audio, scheduler: BatchScheduler) -> None:  # type: ignore[no-untyped-def]
    import ctranslate2
    from faster_whisper.audio import pad_or_trim

    features = np.stack([pad_or_trim(whisper.feature_extractor(audio[name][: 16000 * 30])[..., :-1]) for name in CLIPS])
    direct = np.asarray(whisper.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
    prompts = [[whisper.hf_tokenizer.token_to_id("<|startoftranscript|>")]] * len(CLIPS)
    with scheduler.opened(Priority.SYNC, "group") as stream:  # whisperx decodes a group of windows so
        model = request_model(whisper, stream)
        encoded = model.model.encode(features)
        generated = model.model.generate(encoded, prompts, beam_size=1, max_length=40)
    # one op per row, merged back into one CTranslate2 call for the encode and one for the generate, rows in order
    assert scheduler.stats.by_op["encode"] == [1, len(CLIPS)] and scheduler.stats.by_op["generate"] == [1, len(CLIPS)]
    assert np.allclose(np.asarray(encoded), direct, atol=1e-3)
    alone = [whisper.model.generate(ctranslate2.StorageView.from_array(direct[row : row + 1]), prompts[:1], beam_size=1,
                                    max_length=40)[0].sequences_ids[0] for row in range(len(CLIPS))]
    assert [result.sequences_ids[0] for result in generated] == alone
