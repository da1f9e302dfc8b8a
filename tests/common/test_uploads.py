"""decode_audio on the real fixtures and on broken files."""
from __future__ import annotations

import io
import os
import struct

import numpy as np
import pytest

from tests.support import fixture_path
from whisper_common.errors import AudioDecodeError, AudioTooLong, EmptyAudio, TruncatedAudio
from whisper_common.uploads import SAMPLE_RATE, decode_audio


@pytest.mark.parametrize(("name", "seconds"), [("jfk.flac", 11.0), ("multilingual.mp3", 59.9), ("dev00.wav", 30.0), ("stereo_diarization.wav", 5.0)])
def test_fixtures_decode_to_16k_mono_float32(name: str, seconds: float) -> None:
    with fixture_path(name).open("rb") as source:
        audio = decode_audio(source)
    assert audio.sample_rate == SAMPLE_RATE and audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.duration == pytest.approx(seconds, abs=0.05)
    assert 0 < np.abs(audio.samples).max() <= 1.0


def test_same_samples_as_faster_whisper() -> None:
    from faster_whisper.audio import decode_audio as faster_whisper_decode

    ours = decode_audio(str(fixture_path("jfk.flac"))).samples
    theirs = faster_whisper_decode(str(fixture_path("jfk.flac")))
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", EmptyAudio),
        (os.urandom(10_000), AudioDecodeError),
        (b"just some text, not audio\n" * 100, AudioDecodeError),
    ],
)
def test_bad_bytes(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_audio(io.BytesIO(data))


@pytest.mark.parametrize("name", ["multilingual.mp3", "jfk.flac", "dev00.wav"])
def test_truncated_files_are_detected(name: str) -> None:
    data = fixture_path(name).read_bytes()
    with pytest.raises(TruncatedAudio) as raised:
        decode_audio(io.BytesIO(data[: len(data) // 3]))
    assert "truncated" in raised.value.message and raised.value.param == "file"


def test_max_seconds() -> None:
    with fixture_path("dev00.wav").open("rb") as source, pytest.raises(AudioTooLong):
        decode_audio(source, max_seconds=10)
    with fixture_path("jfk.flac").open("rb") as source:
        assert decode_audio(source, max_seconds=12).duration == pytest.approx(11.0, abs=0.01)


def _wav(*, declared_data_bytes: int | None = None, payload: bytes = b"\0\0" * 16_000, channels: int = 1, rate: int = 16_000) -> bytes:
    """A PCM WAV whose `data` chunk header may declare more bytes than follow it."""
    block = channels * 2
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, 16)
    size = len(payload) if declared_data_bytes is None else declared_data_bytes
    return b"RIFF" + struct.pack("<I", min(36 + size, 0xFFFFFFFF)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + payload


def test_wav_cut_after_its_header_is_truncated() -> None:
    """FFmpeg caps a WAV's declared duration at the file size, so only the header's data size shows the cut."""
    data = fixture_path("sample.wav").read_bytes()[:1000]
    with pytest.raises(TruncatedAudio) as raised:
        decode_audio(io.BytesIO(data))
    assert "960000 bytes" in raised.value.message and raised.value.code == "truncated_audio"


def test_wav_declaring_two_hours_with_one_second_is_truncated() -> None:
    with pytest.raises(TruncatedAudio):
        decode_audio(io.BytesIO(_wav(declared_data_bytes=16_000 * 2 * 7200)))


def test_complete_and_streamed_wavs_are_accepted() -> None:
    assert decode_audio(io.BytesIO(_wav())).duration == pytest.approx(1.0)
    # FFmpeg writing to a pipe cannot seek back: it leaves the data size at 0xFFFFFFFF ("unknown").
    assert decode_audio(io.BytesIO(_wav(declared_data_bytes=0xFFFFFFFF))).duration == pytest.approx(1.0)


@pytest.mark.parametrize(("channels", "rate"), [(0, 16_000), (1, 0)])
def test_wav_with_no_channels_or_no_rate_is_not_audio(channels: int, rate: int) -> None:
    with pytest.raises(AudioDecodeError):
        decode_audio(io.BytesIO(_wav(channels=channels, rate=rate)))
