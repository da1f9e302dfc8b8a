"""The numpy speaker encoder against the libraries it replaces, on real audio: the checkpoint reader against
`torch.load`, the mel spectrogram against librosa, the d-vectors against resemblyzer's own `VoiceEncoder`
(torch and librosa are installed in the venv as whisperx's dependencies; the service itself no longer imports
them for the embedded diarizer)."""
from __future__ import annotations

import importlib
import importlib.util
import pickle
from types import ModuleType

import numpy as np
import pytest

from tests.support import fixture_path, require


def require_import(module: str) -> ModuleType:
    require(importlib.util.find_spec(module) is not None, module)
    return importlib.import_module(module)


def _audio(name: str) -> np.ndarray:
    from whisper_common.uploads import decode_audio

    return decode_audio(str(fixture_path(name))).samples


@pytest.fixture(scope="module")
def resemblyzer_encoder():
    require_import("resemblyzer")
    from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


@pytest.fixture(scope="module")
def encoder():
    from whisper_common.speakers.encoder import SpeakerEncoder

    return SpeakerEncoder()


def test_checkpoint_reader_equals_torch_load() -> None:
    torch = require_import("torch")
    from whisper_common.speakers.speaker_net import resemblyzer_weights_path
    from whisper_common.speakers.torch_checkpoint import load_legacy_checkpoint

    path = resemblyzer_weights_path()
    ours = load_legacy_checkpoint(path)["model_state"]
    theirs = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    assert sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == np.float32
        assert np.array_equal(ours[name], tensor.numpy()), name


def test_checkpoint_reader_refuses_other_classes(tmp_path) -> None:
    """A pickle naming any class besides containers and tensors is refused before anything runs."""
    from whisper_common.speakers.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, CheckpointError, load_legacy_checkpoint

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    hostile = tmp_path / "hostile.pt"
    with open(hostile, "wb") as file:
        for part in (LEGACY_MAGIC, LEGACY_PROTOCOL, {}, {"model_state": Payload()}, []):
            pickle.dump(part, file, protocol=2)
    with pytest.raises(CheckpointError, match="does not load"):
        load_legacy_checkpoint(hostile)
    assert not marker.exists()
    (tmp_path / "zip.pt").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(CheckpointError, match="zip"):
        load_legacy_checkpoint(tmp_path / "zip.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_legacy_checkpoint(tmp_path / "junk.pt")


@pytest.mark.parametrize("length", [1, 159, 160, 401, 16000 * 3 + 7, None])
def test_mel_spectrogram_equals_librosa(length: int | None) -> None:
    librosa = require_import("librosa")
    from whisper_common.speakers.mel import mel_filters, mel_spectrogram

    samples = _audio("sample.wav")[:length]
    theirs = librosa.feature.melspectrogram(y=samples, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    ours = mel_spectrogram(samples)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mel_filters(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), atol=1e-7)


def test_window_dvectors_equal_resemblyzer(encoder, resemblyzer_encoder) -> None:
    torch = require_import("torch")
    from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

    samples = _audio("dev00.wav")[: 16000 * 12]
    mel = wav_to_mel_spectrogram(normalize_volume(samples, -30, increase_only=True))
    np.testing.assert_allclose(encoder.mel(samples), mel, rtol=1e-4, atol=1e-6)
    windows = np.stack([mel[start : start + 150] for start in range(0, len(mel) - 150, 25)])
    with torch.inference_mode():
        theirs = resemblyzer_encoder(torch.from_numpy(windows)).numpy()
    ours = encoder.windows(windows)
    assert ours.shape == theirs.shape == (len(windows), 256)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("name", "seconds"), [("jfk.flac", None), ("sample.wav", 2.5), ("dev01.wav", 10.0)])
def test_utterance_dvector_equals_resemblyzer(encoder, resemblyzer_encoder, name: str, seconds: float | None) -> None:
    from resemblyzer.audio import normalize_volume

    samples = _audio(name)[: int(16000 * seconds) if seconds else None]
    theirs = resemblyzer_encoder.embed_utterance(normalize_volume(samples, -30, increase_only=True))
    ours = encoder.utterance(samples)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    other = encoder.utterance(_audio("dev00.wav")[16000 * 5 : 16000 * 10])
    assert float(ours @ theirs) > 0.9999 > float(ours @ other)
