"""A service whose DATA_DIR cannot be written stops at once with one clear line (a read-only root filesystem without
the data volume is the usual cause), instead of a traceback from the jobs store."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT, free_port


@pytest.mark.parametrize("module", ["whisper_faster", "whisperx_api"])
def test_an_unwritable_data_dir_stops_the_start_with_a_clear_message(tmp_path, module: str) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where DATA_DIR's parent should be")
    data_dir = blocker / "data"
    env = {
        "PATH": "/usr/bin:/bin",
        "DATA_DIR": str(data_dir),
        "UVICORN_HOST": "127.0.0.1",
        "UVICORN_PORT": str(free_port()),
        "WHISPER__MODEL": "tiny.en",
        "PRELOAD_MODELS": "",
    }
    result = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert f"DATA_DIR {data_dir} is not writable" in result.stderr
    assert "Traceback" not in result.stderr
