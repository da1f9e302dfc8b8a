"""DER of the embedded diarizer on two clip sets: `python -m bench.der_eval` prints both tables.

- dev: the 14 clips the diarizer was developed on (fixtures, recuts, `conversations()` seed 12);
- held-out: never tuned on: `conversations(8, seed=2027)`, the fixtures cut at other offsets, joins of
  different fixtures (four voices: two telephone, two AMI), and single voices (a count of one must stay one).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.report import table
from bench.whisperx_clips import SAMPLE_RATE, Clip, conversations, cut, decode, der, fixture_clip, join, recuts, utterances


@dataclass(frozen=True)
class Score:
    clip: Clip
    result: dict[str, float]
    seconds: float


def dev_clips() -> list[Clip]:
    return [fixture_clip(file_id) for file_id in ("sample", "dev00", "dev01")] + recuts() + conversations()


def held_out_clips() -> list[Clip]:
    sample, dev00, dev01 = (fixture_clip(file_id) for file_id in ("sample", "dev00", "dev01"))
    return [
        cut(dev00, 10, 25, "dev00 10-25 s"), cut(dev01, 10, 25, "dev01 10-25 s"), cut(sample, 5, 20, "sample 5-20 s"),
        join([sample, dev00], "sample + dev00"), join([dev01, sample], "dev01 + sample"),
    ] + conversations(count=8, seed=2027) + single_voices(("JFK", "MEE009", "MEE012", "speaker91"))


def single_voices(names: tuple[str, ...]) -> list[Clip]:
    """Each voice's solo stretches from the fixtures, 0.5 s apart: one speaker throughout."""
    voices = utterances()
    return [
        join([Clip(who, piece, [(0.0, len(piece) / SAMPLE_RATE, who)]) for piece in voices[who]], f"{who} alone")
        for who in names
    ]


def new_diarizer() -> Any:
    from whisperx_api.diarize.base import SpeakerBounds
    from whisperx_api.diarize.embedded import EmbeddedDiarizer

    diarizer = EmbeddedDiarizer()
    diarizer(decode("jfk.flac"), SpeakerBounds())  # warm-up
    return diarizer


def score(diarizer: Any, clips: list[Clip]) -> list[Score]:
    from whisperx_api.diarize.base import SpeakerBounds

    scores = []
    for clip in clips:
        started = time.perf_counter()
        turns = diarizer(clip.samples, SpeakerBounds())
        elapsed = time.perf_counter() - started
        scores.append(Score(clip, der(clip, [(turn.start, turn.end, turn.speaker) for turn in turns]), elapsed))
    return scores


def mean_der(scores: list[Score]) -> float:
    return statistics.mean(s.result["der"] for s in scores)


def render(scores: list[Score]) -> str:
    rows: list[list[object]] = [[
        s.clip.name, f"{s.clip.seconds:.0f}", f"{s.result['der']:.1%}", f"{s.result['missed']:.1%}",
        f"{s.result['false_alarm']:.1%}", f"{s.result['confusion']:.1%}",
        f"{s.result['speakers']} / {s.result['reference_speakers']}", f"{s.seconds:.2f}",
    ] for s in scores]
    rows.append(["**mean**", "", f"**{mean_der(scores):.1%}**", "", "", "", "", ""])
    return table(["clip", "s", "DER (collar 0.25 s)", "missed", "false alarm", "confusion", "speakers found / reference",
                  "seconds"], rows)


def main() -> None:
    diarizer = new_diarizer()
    for title, clips in (("dev", dev_clips()), ("held-out", held_out_clips())):
        print(f"## {title}\n\n{render(score(diarizer, clips))}\n", flush=True)


if __name__ == "__main__":
    main()
