"""Runs a session's DecodeRequest on faster-whisper (in a worker thread).

Finals go through `WhisperModel.transcribe` (beam search, the usual 30 s window): they are the text that stays. A final
is decoded afresh from the whole utterance, not forced to begin with the words already sent as deltas: those were
agreed on while the last word was still being spoken ("what you" before "what your country"), and forcing them made
one early mishearing permanent. Where the final differs, `completed` carries the correction (the session sends no
delta that contradicts the earlier ones).
Partials only have to agree with the next partial, and there are many of them, so they take a cheaper path: greedy,
and the encoder sees the utterance plus 1 s of padding instead of 30 s (never under 10 s: shorter windows make
Whisper repeat itself), which costs a fraction of a full decode; the output length is capped by the audio's length
for the same reason. Both are prompted with the client's prompt and the end of the session's earlier finals, and both
hear the previous utterance as left context when the session gives one (its transcript is the forced prefix, cut from
what comes back)."""
from __future__ import annotations

import ctranslate2
import numpy as np
from faster_whisper.tokenizer import Tokenizer

from whisper_faster.models import LoadedModel
from whisper_faster.realtime.session import DecodeRequest

FINAL_BEAM = 5
PARTIAL_MIN_FRAMES = 1000  # 10 s of 10 ms mel frames
PARTIAL_PADDING_FRAMES = 100
FULL_FRAMES = 3000
TOKENS_PER_SECOND = 6


def transcribe_utterance(model: LoadedModel, request: DecodeRequest) -> str:
    language = request.config.language or (None if model.is_multilingual else "en")
    if request.final or language is None:
        return _transcribe(model, request, language)
    return _partial(model, request, language)


def _transcribe(model: LoadedModel, request: DecodeRequest, language: str | None) -> str:
    segments, _ = model.whisper.transcribe(
        request.samples,
        language=language,
        initial_prompt=request.prompt,
        prefix=_prefix(request.context_text),
        beam_size=FINAL_BEAM if request.final else 1,
        temperature=0.0,
        condition_on_previous_text=False,
        without_timestamps=True,
        vad_filter=False,
    )
    return request.without_context(
        "".join(segment.text for segment in segments if segment.no_speech_prob < 0.6 or segment.avg_logprob > -1)
    )


def _prefix(text: str) -> str | None:
    return text.strip() or None


def _partial(model: LoadedModel, request: DecodeRequest, language: str) -> str:
    whisper = model.whisper
    features = whisper.feature_extractor(request.samples)
    frames = min(FULL_FRAMES, max(PARTIAL_MIN_FRAMES, features.shape[1] + PARTIAL_PADDING_FRAMES))
    if features.shape[1] < frames:
        features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
    encoded = whisper.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None, :, :frames])))
    tokenizer = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe", language=language)
    previous = tokenizer.encode(" " + request.prompt.strip()) if request.prompt else []
    prompt = whisper.get_prompt(tokenizer, previous, without_timestamps=True, prefix=_prefix(request.context_text))
    budget = int(10 + (request.audio_seconds - request.context_seconds) * TOKENS_PER_SECOND)
    result = whisper.model.generate(encoded, [prompt], beam_size=1, max_length=min(448, len(prompt) + budget),
                                    suppress_blank=True, suppress_tokens=[-1])[0]
    return request.without_context(tokenizer.decode([token for token in result.sequences_ids[0] if token < tokenizer.eot]))
