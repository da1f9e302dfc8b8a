"""Alignment helpers on real data: wav2vec2's untimed words (digits, symbols) and the offline fallback."""
from __future__ import annotations

import time

import numpy as np

from whisperx_api.align import Wav2Vec2Models, any_host_reachable, fill_missing_word_times, snap_to_speech, voiced_frames
from whisperx_api.settings import AlignmentSettings


def test_untimed_numbers_take_the_gap_between_neighbours() -> None:
    segment = {
        "start": 1.0,
        "end": 4.0,
        "words": [
            {"word": "in", "start": 1.0, "end": 1.2, "score": 0.9},
            {"word": "1963", "score": 0.0},
            {"word": "%", "score": 0.0},
            {"word": "there", "start": 2.2, "end": 2.6, "score": 0.8},
            {"word": "42"},
        ],
    }
    fill_missing_word_times(segment)
    words = segment["words"]
    assert [(w["start"], w["end"]) for w in words[1:3]] == [(1.2, 1.7), (1.7, 2.2)]
    assert (words[4]["start"], words[4]["end"]) == (2.6, 4.0)


def test_snap_moves_boundaries_onto_speech() -> None:
    rate = 16000
    rng = np.random.default_rng(0)
    audio = np.zeros(3 * rate, dtype=np.float32)
    audio[int(0.5 * rate) : int(1.0 * rate)] = rng.normal(0, 0.3, int(0.5 * rate))
    audio[int(1.6 * rate) : int(2.2 * rate)] = rng.normal(0, 0.3, int(0.6 * rate))
    words = [{"word": "one", "start": 0.35, "end": 1.3}, {"word": "two", "start": 1.3, "end": 2.4}]
    snap_to_speech(words, voiced_frames(audio))
    assert abs(words[0]["start"] - 0.5) <= 0.02 and abs(words[0]["end"] - 1.0) <= 0.02
    assert abs(words[1]["start"] - 1.6) <= 0.02 and abs(words[1]["end"] - 2.2) <= 0.02


def test_unloadable_alignment_model_fails_fast_and_is_remembered() -> None:
    models = Wav2Vec2Models(
        AlignmentSettings(model_dir="/nonexistent-align-cache", load_timeout_seconds=30, retry_seconds=600), "cpu"
    )
    started = time.monotonic()
    first = models.get("en")  # no network here: the download fails
    second = models.get("en")
    assert isinstance(first, str) and first == second
    assert time.monotonic() - started < 35
    assert isinstance(models.get("xx"), str)  # no alignment model for the language at all


def test_wav2vec2_path_times_every_word(tmp_path, monkeypatch) -> None:
    """WhisperX's own alignment code on real audio. Only the downloads are replaced: the wav2vec2 checkpoint by the
    same architecture with untrained weights (so timings are not judged, only that every word, digits included, gets
    one inside its segment) and nltk's punkt_tab data by an untrained sentence splitter."""
    import torchaudio

    from tests.support import fixture_path
    from whisper_common.uploads import decode_audio
    from whisperx_api.align import WAV2VEC2, WordAligner

    punkt = tmp_path / "nltk" / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (punkt / name).touch()
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "nltk"))
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk"), *nltk.data.path])

    labels = torchaudio.pipelines.WAV2VEC2_ASR_BASE_960H.get_labels()
    model = torchaudio.models.wav2vec2_base(aux_num_out=len(labels)).eval()
    aligner = WordAligner(AlignmentSettings(mode="wav2vec2"), "cpu")
    aligner.wav2vec2.put("en", model, {"language": "en", "dictionary": {c.lower(): i for i, c in enumerate(labels)}, "type": "torchaudio"})

    audio = decode_audio(str(fixture_path("jfk.flac"))).samples
    text = " And so my fellow Americans, ask not what your country can do for you, 42 times."
    segments, method = aligner.align(audio, [{"start": 0.3, "end": 10.9, "text": text, "words": []}], "en")
    assert method == WAV2VEC2
    words = [word for segment in segments for word in segment["words"]]
    assert [word["word"] for word in words] == text.split()
    for word in words:
        assert 0.3 - 1e-6 <= word["start"] <= word["end"] <= 10.9 + 1e-6, word


def test_reachability_check_is_bounded_even_when_dns_hangs(monkeypatch) -> None:
    """A resolver with no upstream (a container without internet) hung each lookup for 10 s, and the first request
    after every wake waited for two of them. getaddrinfo is replaced by a slow one: a hung resolver cannot be made
    on loopback."""
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: time.sleep(10) or [])
    started = time.monotonic()
    assert any_host_reachable(["https://download.pytorch.org", "https://huggingface.co"], timeout=0.5) is False
    assert time.monotonic() - started < 1.5


def test_reachability_check_finds_a_listening_host_and_honours_offline_mode(monkeypatch) -> None:
    import socket

    from huggingface_hub import constants

    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        assert any_host_reachable(["http://127.0.0.1:1", url], timeout=2.0) is True
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        assert any_host_reachable([url], timeout=2.0) is False
