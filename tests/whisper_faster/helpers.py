"""Checks several whisper-faster tests share: WER, OpenAI error bodies, subtitle parsing."""
from __future__ import annotations

import re

import httpx
import jiwer

_NORMALISE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def word_error_rate(reference: str, hypothesis: str) -> float:
    return jiwer.wer(reference, hypothesis, reference_transform=_NORMALISE, hypothesis_transform=_NORMALISE)


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


_CUE_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})[.,](\d{3}) --> (\d{2}):(\d{2}):(\d{2})[.,](\d{3})$")


def cue_times(subtitles: str, decimal_marker: str) -> list[tuple[float, float]]:
    """(start, end) of each cue; fails on a timing line that is not `HH:MM:SS<marker>mmm --> ...`."""
    times = []
    for line in subtitles.splitlines():
        if "-->" not in line:
            continue
        assert decimal_marker in line, line
        match = _CUE_TIME.match(line)
        assert match, f"bad cue timing line: {line!r}"
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(group) for group in match.groups())
        times.append((h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000))
    return times


def assert_monotonic_within(times: list[tuple[float, float]], duration: float) -> None:
    assert times, "no cues"
    previous_start = 0.0
    for start, end in times:
        assert 0 <= start <= end <= duration + 0.001, (start, end, duration)
        assert start >= previous_start, times
        previous_start = start
