"""The embedded diarizer runs without scikit-learn: importing sklearn.cluster alone costs about 100 MB of memory."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests.support import fixture_path, require

SCRIPT = """
import sys
from whisper_common.uploads import decode_audio
from whisperx_api.diarize.base import SpeakerBounds
from whisperx_api.diarize.embedded import EmbeddedDiarizer

turns = EmbeddedDiarizer()(decode_audio(sys.argv[1]).samples, SpeakerBounds())
print(len({turn.speaker for turn in turns}), sorted(name for name in sys.modules if name.split(".")[0] == "sklearn"))
"""


def test_embedded_diarizer_never_imports_sklearn() -> None:
    require(importlib.util.find_spec("resemblyzer") is not None, "resemblyzer")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(fixture_path("sample.wav"))], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    speakers, modules = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert modules == "[]"
    assert speakers == "2"
