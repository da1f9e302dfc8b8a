"""What DIARIZATION__ANCHOR_KNOWN_SPEAKERS changes on long recordings (issue 21 item 4: enrolled voiceprints anchoring
the clustering).

    python -m bench.anchor_known_speakers

The recordings of bench.long_der with four voices or more (dev and held-out, from its cache or built again), each
diarized once by the embedded diarizer; every voice of the recording is enrolled as a voiceprint of two 5 s clips
(the real voices from their fixture material, which the recordings also use, so for them the test is not
independent; the synthetic voices from sentences of their own), and the diarized turns are named without and with
anchoring (whisperx_api.diarize.known.SpeakerMatcher, the default threshold). Printed per recording: DER (collar
0.25 s, overlap scored) and the speakers found after naming, how many of them carry a voice's name.
"""
from __future__ import annotations

import time

import numpy as np

from bench.long_der import cached, dev_specs, held_out_specs
from tests.whisperx_api.meetings import (
    DEV_SYNTHETIC, HELD_OUT_SYNTHETIC, SAMPLE_RATE, der, real_speech, sentences, synthesize,
)


def main() -> None:
    from whisper_common.speakers.encoder import SpeakerEncoder
    from whisper_common.speakers.matching import Reference, mean_embedding
    from whisperx_api.diarize.base import SpeakerBounds
    from whisperx_api.diarize.embedded import EmbeddedDiarizer
    from whisperx_api.diarize.known import KnownVoices, SpeakerMatcher

    encoder = SpeakerEncoder()
    diarizer = EmbeddedDiarizer(encoder=encoder)
    real = {who: np.concatenate(parts) for who, parts in real_speech().items()}
    synthetic = {voice.name: voice for voice in DEV_SYNTHETIC + HELD_OUT_SYNTHETIC}
    rng = np.random.default_rng(99)

    def voiceprint(who: str) -> Reference:
        if who in real:
            speech = real[who]
        else:
            speech = np.concatenate([synthesize(synthetic[who], line) for line in sentences(rng, 4)])
        five = 5 * SAMPLE_RATE
        clips = [speech[:five], speech[five:2 * five]] if len(speech) >= 2 * five else [speech]
        return Reference(who, mean_embedding([encoder.utterance(clip) for clip in clips]), f"spk_{who}")

    for spec in dev_specs() + held_out_specs():
        recording = cached(spec)
        voices = sorted({who for _, _, who in recording.turns})
        if len(voices) < 4:
            continue
        started = time.perf_counter()
        turns = diarizer(recording.samples, SpeakerBounds())
        known = KnownVoices(voiceprints=tuple(voiceprint(who) for who in voices))
        line = [spec.key]
        for anchor in (False, True):
            named, _ = SpeakerMatcher(encoder, anchor=anchor).name_speakers(recording.samples, turns, known)
            result = der(recording, [(turn.start, turn.end, turn.speaker) for turn in named])
            labels = {turn.speaker for turn in named}
            line.append(f"anchor {'on' if anchor else 'off'}: DER {result['der']:.1%}, speakers {len(labels)} / "
                        f"{len(voices)}, named {len(labels & set(voices))}")
        print(" | ".join(line), f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
