"""Runs a session's DecodeRequest on faster-whisper (in a worker thread).

Decodes encode only the audio they have plus 3 s of padding (never under 10 s: shorter windows make Whisper repeat
itself) instead of Whisper's 30 s window, and cap the output length by the audio's length for the same reason. (With
1 s of padding, a 14 s passage once came back as its first sentence only.) The encoder dominates the cost of a short
decode, and its attention grows with the square of the window: with tiny.en on 2 threads, 30 s took 0.58 s to encode
and 10 s 0.065 s, while a whole 3 s beam-5 transcription took 0.67 s. Utterance decoding is what the session waits for
after the end of speech, so this is its latency and most of its CPU cost.

Finals use beam search (5) and faster-whisper's no-speech rule: they are the text that stays. A final is decoded afresh
from the whole utterance, not forced to begin with the words already sent as deltas: those were agreed on while the
last word was still being spoken ("what you" before "what your country"), and forcing them made one early mishearing
permanent. Where the final differs, `completed` carries the correction (the session sends no delta that contradicts
the earlier ones). Partials only have to agree with the next partial, and there are many of them: greedy.
Both are prompted with the client's prompt and the end of the session's earlier finals, and both hear the previous
utterance as left context when the session gives one (its transcript is the forced prefix, cut from what comes back).
Without a language (a multilingual model and none configured) decoding goes through `WhisperModel.transcribe`, which
detects it.

Unless the session opted out (`hallucination_guard: false`), an utterance goes through the speech gate the file routes
use (whisper_common.speech_gate) until a decode of it has given words: only the speech the gate finds in it is decoded
(after the left context), and one in which the session's VAD never heard speech (a manual commit of silence or noise),
or in which the gate finds none, is not decoded at all. (A plucked-string melody once opened an utterance on a
half-second VAD blip, and a greedy partial of the whole 25 s of music said "Thank you.", then kept by the final.) Once
an utterance has given words, its decodes hear all of its audio, as without the guard. A decoded text without words,
or looping, is then emptied or cut (whisper_common.speech_guard). `report` counts it."""
from __future__ import annotations

from dataclasses import replace

import ctranslate2
import numpy as np
from faster_whisper.tokenizer import Tokenizer

from whisper_common.speech_gate import speech_only
from whisper_common.speech_guard import Reason, Report, TextGuard, silent_window
from whisper_faster.models import LoadedModel
from whisper_faster.realtime.session import DecodeRequest

FINAL_BEAM = 5
MIN_FRAMES = 1000  # 10 s of 10 ms mel frames
PADDING_FRAMES = 300
FULL_FRAMES = 3000
PARTIAL_TOKENS_PER_SECOND = 6
FINAL_TOKENS_PER_SECOND = 10
WINDOWED_FINAL_MAX_SECONDS = (MIN_FRAMES - PADDING_FRAMES) / 100
"""Finals up to this long (context included) take the short window, where it saves the most; longer ones take
faster-whisper's 30 s window, where Whisper ends long passages more reliably (in a window cut close to the speech it
sometimes repeated or dropped the last sentences) and the saving would be small."""


def transcribe_utterance(model: LoadedModel, request: DecodeRequest, report: Report | None = None) -> str:
    """The utterance's text (the final's or a partial's); only finals are reported (partials are many per utterance)."""
    guarded = request.config.hallucination_guard
    report = report if request.final else None
    if guarded and not request.speech_confirmed:
        speech = _speech_only(request) if request.has_speech else None
        if speech is None:
            if report is not None:
                report(Reason.NO_SPEECH.value)
            return ""
        request = speech
    silenced = report if guarded else None
    language = request.config.language or (None if model.multilingual else "en")
    if language is None or (request.final and request.audio_seconds > WINDOWED_FINAL_MAX_SECONDS):
        text = _transcribe(model, request, language)
    elif request.final:
        text = _windowed(model, request, language, beam_size=FINAL_BEAM, tokens_per_second=FINAL_TOKENS_PER_SECOND,
                         silenced=silenced)
    else:
        text = _windowed(model, request, language, beam_size=1, tokens_per_second=PARTIAL_TOKENS_PER_SECOND,
                         silenced=silenced)
    return TextGuard(report, language=language).check(text) if guarded else text


def _speech_only(request: DecodeRequest) -> DecodeRequest | None:
    """The request with the utterance's own audio cut to the speech the gate finds in it (the left context kept), or
    None when it finds none."""
    speech, regions = speech_only(request.samples[request.context_samples:])
    if not regions:
        return None
    return replace(request, samples=np.concatenate([request.samples[:request.context_samples], speech]))


def _transcribe(model: LoadedModel, request: DecodeRequest, language: str | None) -> str:
    """faster-whisper's own path (it detects the language first, and drops windows by its no-speech rule itself)."""
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
    return request.without_context("".join(segment.text for segment in segments))


def _prefix(text: str) -> str | None:
    return text.strip() or None


def _windowed(model: LoadedModel, request: DecodeRequest, language: str, beam_size: int,
              tokens_per_second: float, silenced: Report | None = None) -> str:
    """Encode only the audio plus padding (at least 10 s) and decode once with CTranslate2; a window Whisper judges
    silent gives "" (reported to `silenced`)."""
    whisper = model.whisper
    features = whisper.feature_extractor(request.samples)
    frames = min(FULL_FRAMES, max(MIN_FRAMES, features.shape[1] + PADDING_FRAMES))
    if features.shape[1] < frames:
        features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
    encoded = whisper.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None, :, :frames])))
    tokenizer = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe", language=language)
    previous = tokenizer.encode(" " + request.prompt.strip()) if request.prompt else []
    prompt = whisper.get_prompt(tokenizer, previous, without_timestamps=True, prefix=_prefix(request.context_text))
    budget = int(10 + (request.audio_seconds - request.context_seconds) * tokens_per_second)
    result = whisper.model.generate(encoded, [prompt], beam_size=beam_size, max_length=min(448, len(prompt) + budget),
                                    suppress_blank=True, suppress_tokens=[-1], return_scores=True,
                                    return_no_speech_prob=True)[0]
    tokens = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # length penalty 1: the score is per token
    if silent_window(result.no_speech_prob, avg_logprob):  # faster-whisper's rule, as `_transcribe` applies it
        if silenced is not None and tokens:
            silenced(Reason.NO_SPEECH_PROB.value)
        return ""
    return request.without_context(tokenizer.decode(tokens))
