"""Calibrated matching of known speakers: the equal error rate and the operating point of the d-vector cosine
similarity that `SpeakerMatcher` thresholds (`DIARIZATION__KNOWN_SPEAKER_THRESHOLD`).

`python -m bench.speaker_verification [--write]` prints (and with --write puts into docs/benchmarks.md) the
trials' result. The trials: every voice available here (tests/whisperx_api/meetings.py: the seven real voices of the
fixtures, the two voices of stereo_diarization.wav, and the twelve espeak-ng voices) cut into clips that never
overlap; a clip of a voice against another clip of the same voice is a target trial, against a clip of another
voice an impostor trial. Both clips of a trial are embedded as the matcher embeds them (`SpeakerEncoder.utterance`).
Each test clip gets a room of its own, a spectral tilt, a speed change and a level (`VoicePool.vary`), as a
recording differs from the enrolment clip. Two conditions: 3 s against 3 s (every voice; also real and synthetic voices apart), and enrolment 5 s against
15 s of a speaker's speech (the voices with enough material: the two readers and the synthetic voices; closer to
how the matcher is used, a reference clip against up to 30 s of a diarized speaker). And two conditions of the
voiceprint library (whisper_common.speakers): a voiceprint (the unit mean of two 5 s clips' d-vectors, as the library
keeps it) against 15 s of a speaker (whisperx's known speakers: DIARIZATION__KNOWN_SPEAKER_THRESHOLD) and against one
3 s utterance (a live session's `speaker`: REALTIME_SPEAKER_THRESHOLD).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.report import table, write_section
from tests.whisperx_api.meetings import (
    DEV_SYNTHETIC, HELD_OUT_SYNTHETIC, SAMPLE_RATE, VoicePool, real_speech, sentences, synthesize,
)
from tests.support import FIXTURES

FALSE_ACCEPT_TARGET = 0.01


@dataclass(frozen=True)
class Clip:
    voice: str
    real: bool
    samples: np.ndarray


@dataclass(frozen=True)
class Result:
    condition: str
    voices: int
    targets: int
    impostors: int
    eer: float
    eer_threshold: float
    threshold: float  # lowest with false accepts <= 1 %
    false_rejects: float  # at that threshold
    default: str  # the setting whose default applies to this condition
    current: float  # that default
    at_current: tuple[float, float]  # false accepts, false rejects at it


def voice_material() -> dict[str, tuple[bool, np.ndarray]]:
    """Per voice: whether it is a real voice, and its speech (solo parts, joined)."""
    import soundfile

    voices = {who: (True, np.concatenate(parts)) for who, parts in real_speech().items()}
    stereo, _ = soundfile.read(str(FIXTURES / "stereo_diarization.wav"), dtype="float32")
    voices["stereo-left"], voices["stereo-right"] = (True, stereo[:, 0]), (True, stereo[:, 1])
    rng = np.random.default_rng(7)
    for voice in DEV_SYNTHETIC + HELD_OUT_SYNTHETIC:
        voices[voice.name] = (False, np.concatenate([synthesize(voice, line) for line in sentences(rng, 14)]))
    return voices


def clips(material: dict[str, tuple[bool, np.ndarray]], enrol: float, test: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Per voice, alternating enrolment and test clips cut back to back from its speech (never overlapping)."""
    pool = VoicePool(np.random.default_rng(seed), ())
    enrolments, tests = [], []
    for who, (real, speech) in material.items():
        cursor, turn = 0, 0
        while True:
            length = int((enrol if turn % 2 == 0 else test) * SAMPLE_RATE)
            if cursor + length > len(speech):
                break
            piece = speech[cursor : cursor + length]
            if turn % 2 == 0:
                enrolments.append(Clip(who, real, piece))
            else:
                tests.append(Clip(who, real, pool.vary(piece, room=f"{who} {turn}")))
            cursor += length
            turn += 1
    return enrolments, tests


def voiceprint_clips(material: dict[str, tuple[bool, np.ndarray]], enrol: float, count: int, test: float,
                     seed: int) -> tuple[list[list[Clip]], list[Clip]]:
    """Per voice, `count` enrolment clips of `enrol` seconds (one voiceprint), then a test clip of `test` seconds,
    again and again, cut back to back (never overlapping)."""
    pool = VoicePool(np.random.default_rng(seed), ())
    groups: list[list[Clip]] = []
    tests: list[Clip] = []
    for who, (real, speech) in material.items():
        cursor, turn = 0, 0
        group: list[Clip] = []
        while True:
            length = int((enrol if len(group) < count else test) * SAMPLE_RATE)
            if cursor + length > len(speech):
                break
            piece = speech[cursor : cursor + length]
            cursor += length
            if len(group) < count:
                group.append(Clip(who, real, piece))
                continue
            groups.append(group)
            tests.append(Clip(who, real, pool.vary(piece, room=f"{who} {turn}")))
            group, turn = [], turn + 1
    return groups, tests


_ENCODER = None


def encoder():  # noqa: ANN201 - one SpeakerEncoder for the run
    global _ENCODER
    if _ENCODER is None:
        from whisper_common.speakers.encoder import SpeakerEncoder

        _ENCODER = SpeakerEncoder()
    return _ENCODER


def embed(clips: list[Clip]) -> np.ndarray:
    return np.stack([encoder().utterance(clip.samples) for clip in clips])


def embed_voiceprints(groups: list[list[Clip]]) -> np.ndarray:
    from whisper_common.speakers.matching import mean_embedding

    return np.stack([mean_embedding(list(embed(group))) for group in groups])


def trials(enrolments: list[Clip], tests: list[Clip], enrolled: np.ndarray, tested: np.ndarray,
           keep: Callable[[Clip], bool] = lambda clip: True) -> tuple[np.ndarray, np.ndarray]:
    """Target and impostor similarities between the kept enrolment and test clips."""
    rows = np.array([keep(clip) for clip in enrolments])
    columns = np.array([keep(clip) for clip in tests])
    similarity = (enrolled[rows] @ tested[columns].T).ravel()
    same = np.array([[a.voice == b.voice for b in np.array(tests)[columns]] for a in np.array(enrolments)[rows]]).ravel()
    return similarity[same], similarity[~same]


def evaluate(condition: str, voices: int, targets: np.ndarray, impostors: np.ndarray, default: tuple[str, float]) -> Result:
    current = default[1]
    thresholds = np.unique(np.concatenate([targets, impostors, [current]]))
    false_accepts = 1 - np.searchsorted(np.sort(impostors), thresholds, side="left") / len(impostors)
    false_rejects = np.searchsorted(np.sort(targets), thresholds, side="left") / len(targets)
    crossing = int(np.argmin(np.abs(false_accepts - false_rejects)))
    allowed = int(np.flatnonzero(false_accepts <= FALSE_ACCEPT_TARGET)[0])
    return Result(
        condition, voices, len(targets), len(impostors),
        eer=float((false_accepts[crossing] + false_rejects[crossing]) / 2),
        eer_threshold=float(thresholds[crossing]),
        threshold=float(thresholds[allowed]),
        false_rejects=float(false_rejects[allowed]),
        default=default[0], current=current,
        at_current=(float((impostors >= current).mean()), float((targets < current).mean())),
    )


def run() -> list[Result]:
    from whisper_faster.settings import REALTIME_CLUSTER_THRESHOLD, REALTIME_SPEAKER_THRESHOLD
    from whisperx_api.diarize.known import KNOWN_SPEAKER_THRESHOLD

    known = ("whisperx DIARIZATION__KNOWN_SPEAKER_THRESHOLD", KNOWN_SPEAKER_THRESHOLD)
    cluster = ("whisper-faster REALTIME_SPEAKER_CLUSTER_THRESHOLD", REALTIME_CLUSTER_THRESHOLD)
    live = ("whisper-faster REALTIME_SPEAKER_THRESHOLD", REALTIME_SPEAKER_THRESHOLD)
    material = voice_material()
    results = []
    for enrol, test, subsets in (
        (3.0, 3.0, (("3 s vs 3 s, all voices", lambda clip: True, cluster),
                    ("3 s vs 3 s, real voices", lambda clip: clip.real, cluster),
                    ("3 s vs 3 s, synthetic voices", lambda clip: not clip.real, cluster))),
        (5.0, 15.0, (("5 s vs 15 s, all voices with enough speech", lambda clip: True, known),)),
    ):
        enrolments, tests = clips(material, enrol, test, seed=11)
        enrolled, tested = embed(enrolments), embed(tests)
        for condition, keep, default in subsets:
            targets, impostors = trials(enrolments, tests, enrolled, tested, keep)
            voices = len({c.voice for c in enrolments if keep(c)} & {c.voice for c in tests if keep(c)})
            results.append(evaluate(condition, voices, targets, impostors, default))
            print(results[-1], flush=True)
    for condition, test, default in (("voiceprint (2 x 5 s) vs 15 s, all voices with enough speech", 15.0, known),
                                     ("voiceprint (2 x 5 s) vs 3 s, all voices with enough speech", 3.0, live)):
        groups, tests = voiceprint_clips(material, 5.0, 2, test, seed=13)
        firsts = [group[0] for group in groups]
        targets, impostors = trials(firsts, tests, embed_voiceprints(groups), embed(tests))
        voices = len({c.voice for c in firsts} & {c.voice for c in tests})
        results.append(evaluate(condition, voices, targets, impostors, default))
        print(results[-1], flush=True)
    return results


def render(results: list[Result]) -> str:
    rows = [[
        r.condition, r.voices, r.targets, r.impostors, f"{r.eer:.1%} (at {r.eer_threshold:.2f})",
        f"{r.threshold:.2f}", f"{r.false_rejects:.1%}",
        f"{r.default} = {r.current:.2f}: {r.at_current[0]:.1%} / {r.at_current[1]:.1%}",
    ] for r in results]
    return table(
        ["trials", "voices (with target trials)", "target trials", "impostor trials", "EER (threshold)",
         "threshold for false accepts ≤ 1 %", "false rejects there",
         "the default that applies: false accepts / rejects there"],
        rows,
    )


INTRO = """
How well the d-vector cosine similarity tells one voice from another, measured so that the known-speaker threshold
comes from false-accept and false-reject rates, not a guess (`python -m bench.speaker_verification --write`). Every
voice available here is cut into clips that never overlap: the seven real voices of the fixtures (two AMI
meeting speakers, two telephone speakers, J. F. Kennedy, the English and the German reader of multilingual.mp3), the
two voices of stereo_diarization.wav, and twelve espeak-ng voices. A clip against another clip of the same voice
is a target trial, against any other voice's clip an impostor trial; each test clip gets a room, a spectral tilt,
a speed change (±4 %) and a level of its own, as a recording differs from the enrolment clip. Both are embedded as
the matcher embeds them (`SpeakerEncoder.utterance`). The real voices give few target trials (their material is
7-28 s each), so their rates are coarse; synthetic voices are easier to tell from people than people are from each
other, and the "all voices" rows mix both. The threshold of the operating point is the lowest with false accepts
at or below 1 % of the impostor trials.

The rows, and the setting each one calibrates: 3 s against 3 s is how a live session clusters unknown voices into
`A`, `B`, … (whisper-faster `REALTIME_SPEAKER_CLUSTER_THRESHOLD`, set at the equal error rate: a wrong merge or a
wrong split cost alike); 5 s against 15 s is a per-request reference clip against a diarized speaker (whisperx
`DIARIZATION__KNOWN_SPEAKER_THRESHOLD`); a voiceprint (the unit mean of two 5 s clips' d-vectors, as the library
`/v1/speakers` keeps it) against 15 s is a library entry against a diarized speaker (the same whisperx setting),
and against one 3 s utterance a library entry naming a live session's utterance (whisper-faster
`REALTIME_SPEAKER_THRESHOLD`). The naming thresholds sit at the operating point, rounded up, so that a wrong name
stays rarer than 1 in 100 impostor trials; an unmatched voice keeps its letter, which is the cheaper mistake. The
voiceprint against 15 s row has one target trial per voice (14): its false-reject rate is coarse, and the threshold
there is the same as the 5 s clip's, which has more trials.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args()
    body = INTRO + "\n" + render(run())
    if args.write:
        write_section("speaker-verification", "Known speakers: calibrated matching (embedded d-vectors)", body)
    else:
        print(body)


if __name__ == "__main__":
    main()
