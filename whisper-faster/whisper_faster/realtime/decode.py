"""Runs a session's DecodeRequest on faster-whisper (in a worker thread): greedy for partials, beam search for finals,
no timestamps; the prompt carries the client's prompt and the end of the session's earlier finals."""
from __future__ import annotations

from whisper_faster.models import LoadedModel
from whisper_faster.realtime.session import DecodeRequest

FINAL_BEAM = 5


def transcribe_utterance(model: LoadedModel, request: DecodeRequest) -> str:
    config = request.config
    segments, _ = model.whisper.transcribe(
        request.samples,
        language=config.language or (None if model.is_multilingual else "en"),
        initial_prompt=request.prompt,
        beam_size=FINAL_BEAM if request.final else 1,
        temperature=0.0,
        condition_on_previous_text=False,
        without_timestamps=True,
        vad_filter=False,
    )
    return "".join(segment.text for segment in segments if segment.no_speech_prob < 0.6 or segment.avg_logprob > -1)
