"""Jobs on whisperx: the same core, with whisperx's own fields (diarize, speaker bounds) and `diarized_json`."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs.conftest import JOB_ENV
from tests.jobs.helpers import submit, wait_for
from tests.service_servers import Server, start_service
from tests.support import fixture_path
from tests.whisperx_api.conftest import require_runtime


@pytest.fixture(scope="module")
def whisperx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_runtime()
    env = {**JOB_ENV, "DATA_DIR": str(tmp_path_factory.mktemp("whisperx-jobs")), "HF_TOKEN": "", "HF_HUB_OFFLINE": "1",
           "ALIGNMENT__LOAD_TIMEOUT_SECONDS": "10"}
    with start_service("whisperx_api", "jobs-whisperx", env, start_timeout=240, client_timeout=300) as server:
        yield server


def test_diarized_job_gives_speakers_in_every_format(whisperx: Server, tmp_path: Path) -> None:
    with whisperx.client() as http:
        accepted = submit(http, fixture_path("stereo_diarization.wav"), response_format="diarized_json", min_speakers="2",
                          max_speakers="2", metadata={"call": "support"})
        assert accepted.status_code == 202, accepted.text
        job = wait_for(http, accepted.json()["id"], timeout=240)
        assert job["status"] == "succeeded", job
        assert job["progress"]["audio_seconds"] == pytest.approx(5.0, abs=0.5)

        diarized = http.get(f"/v1/jobs/{job['id']}/result").json()  # the format asked at submit
        speakers = {segment["speaker"] for segment in diarized["segments"]}
        assert len(speakers) == 2, diarized
        srt = http.get(f"/v1/jobs/{job['id']}/result", params={"response_format": "srt"}).text
        assert len(set(re.findall(r"\[(SPEAKER_\d+)\] ", srt))) == 2, srt
        text = http.get(f"/v1/jobs/{job['id']}/result", params={"response_format": "json"}).json()["text"]
        assert "curtain" in text.lower() and "distant" in text.lower()

        refused = http.post("/v1/jobs", files={"file": ("a.wav", b"x")}, data={"min_speakers": "3", "max_speakers": "2"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "min_speakers"
        wrong_service = http.post("/v1/jobs", files={"file": ("a.wav", b"x")}, data={"beam_size": "5"})
        assert wrong_service.status_code == 400 and wrong_service.json()["error"]["param"] == "beam_size"
