"""The speech gate (whisper_common.speech_gate): faster-whisper's speech regions, with Silero's state renewed so that
speech after a long stretch of noise is still found."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.invented_words import gapped_jfk, gaps
from tests.non_speech import tools_available, write_corpus
from tests.service_servers import require_modules
from tests.support import fixture_path, require

require_modules({"faster_whisper": "faster-whisper"})

from faster_whisper.vad import VadOptions, get_speech_timestamps  # noqa: E402

from whisper_common.speech_gate import speech_probabilities, speech_regions, speech_seconds  # noqa: E402
from whisper_common.uploads import decode_audio  # noqa: E402


@pytest.mark.parametrize("name", ["jfk.flac", "sample.wav", "dev00.wav", "dev01.wav"])
def test_without_renewal_the_regions_are_faster_whispers(name: str) -> None:
    samples = decode_audio(str(fixture_path(name))).samples
    assert speech_regions(samples, probabilities=speech_probabilities(samples, None)) == get_speech_timestamps(
        samples, VadOptions())


def test_speech_after_30_s_of_noise_is_found(tmp_path: Path) -> None:
    require(tools_available(), "sox and espeak-ng")
    noise = gaps(write_corpus(tmp_path / "corpus", 6.0, "tuning"))["pink noise"]
    speech = gapped_jfk(tmp_path, noise, "pink")
    samples = decode_audio(str(speech.path)).samples
    carried = speech_regions(samples, probabilities=speech_probabilities(samples, None))
    renewed = speech_regions(samples)
    first_sentence = speech.spans[0]

    def covers(regions: list[dict[str, int]]) -> bool:
        return any(r["start"] / 16000 <= first_sentence[0] + 1 and r["end"] / 16000 >= first_sentence[1] - 1
                   for r in regions)

    assert not covers(carried)  # what faster-whisper's own VAD filter does: the sentence is lost
    assert covers(renewed)
    assert speech_seconds(renewed) < 20  # and the 90 s of noise stay out


def test_silence_has_no_speech() -> None:
    assert speech_regions(np.zeros(16000 * 20, dtype=np.float32)) == []
