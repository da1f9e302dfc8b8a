"""A diarized request with known speakers loads none of the heavy libraries the embedded diarizer used to need:
PyTorch (~450 MB resident), scikit-learn (~100 MB) and numba/llvmlite (librosa's; compiling took ~25 s on a first
request). Checked on a real server process of its own, through the shared libraries it has mapped."""
from __future__ import annotations

from pathlib import Path

from tests.service_servers import ServerFactory
from tests.support import fixture_path
from tests.wav import write_wav
from tests.whisperx_api.synth import SAMPLE_RATE

HEAVY_LIBRARIES = {"PyTorch": "libtorch", "scikit-learn": "/sklearn/", "numba": "llvmlite"}


def _mapped(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name, marker in HEAVY_LIBRARIES.items() if marker in maps}


def test_diarized_request_with_known_speakers_loads_no_torch_sklearn_or_numba(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    from whisper_common.uploads import decode_audio

    audio = fixture_path("sample.wav").read_bytes()
    clip = write_wav(decode_audio(str(fixture_path("dev01.wav"))).samples[7 * SAMPLE_RATE : 11 * SAMPLE_RATE], tmp_path / "ref.wav")
    with start_server("whisperx-light", HF_TOKEN="", HF_HUB_OFFLINE="1") as server, server.client() as http:
        assert _mapped(server.process.pid) == set()
        reference = ("known_speaker_references[]", ("ref.wav", clip.read_bytes(), "audio/wav"))
        response = http.post(
            "/transcribe",
            files=[("file", ("sample.wav", audio, "audio/wav")), reference],
            data={"known_speaker_names[]": ["Maria"]},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["diarization"] == "embedded"
        assert len({segment["speaker"] for segment in body["segments"]}) == 2
        assert _mapped(server.process.pid) == set()
