"""whisper-faster's configuration: the shared ServiceSettings (WHISPER__*, API_KEYS, limits, concurrency, uvicorn, jobs),
the batch scheduler's (SCHEDULER__*), the voiceprint library's (SPEAKERS__*) and the realtime sessions'
(MAX_REALTIME_SESSIONS, REALTIME_*)."""
from __future__ import annotations

from pydantic import Field

from whisper_common.batching.settings import SchedulerSettings, max_concurrency_field, max_queue_field
from whisper_common.settings import Duration, ServiceSettings
from whisper_common.speakers.settings import SpeakerLibrarySettings


REALTIME_SPEAKER_THRESHOLD = 0.83
"""bench/speaker_verification.py: a voiceprint of two 5 s clips against a 3 s utterance, false accepts at most 1 % of
impostor trials from 0.83 up (false rejects 24 %)."""
REALTIME_CLUSTER_THRESHOLD = 0.75
"""The same bench: a 3 s clip against another 3 s clip, equal error rate (5.5 %) at 0.75."""


class FasterSchedulerSettings(SchedulerSettings):
    """How windows of audio from different requests are decoded together (env prefix `SCHEDULER__`)."""

    windows_in_flight: int = Field(
        4,
        ge=1,
        le=64,
        description="Windows of one recording decoded at once: a long file's share of a batch, and its memory (this "
        "many windows of audio and features); the rest of the file waits, undecoded, until one is done.",
    )


class Settings(ServiceSettings):
    """Environment variables of whisper-faster. Every field is documented for the configuration reference."""

    max_concurrency: int = max_concurrency_field()
    max_queue: int = max_queue_field()
    scheduler: FasterSchedulerSettings = Field(default_factory=FasterSchedulerSettings, description="See `SCHEDULER__*`.")
    speakers: SpeakerLibrarySettings = Field(default_factory=SpeakerLibrarySettings, description="See `SPEAKERS__*`.")

    max_realtime_sessions: int = Field(
        4,
        ge=0,
        le=1000,
        description="Realtime WebSocket sessions (`/v1/realtime`) open at once; one more gets an `error` event and "
        "close code 1013. 0 turns realtime off. The benchmark (`make bench`) measures how many stay real-time here.",
    )
    realtime_idle_seconds: float = Field(
        60, gt=0, le=86_400, description="Close a realtime session that sent no audio for this long (seconds)."
    )
    realtime_partial_interval_ms: int = Field(
        500,
        ge=100,
        le=10_000,
        description="Re-decode a growing utterance for partial text (`delta` events) at most this often, in ms of "
        "audio; never more than one decode per session at a time, so partials cannot pile up.",
    )
    realtime_max_utterance_seconds: float = Field(
        25,
        ge=2,
        le=30,
        description="An utterance still going on after this many seconds is committed and transcribed, and a new one "
        "starts (bounds the work of each decode; Whisper sees 30 s at most).",
    )
    realtime_max_lag_seconds: float = Field(
        6,
        gt=0,
        le=600,
        description="A session whose oldest untranscribed utterance ended longer ago than this (seconds) cannot keep "
        "up: it gets an `error` event and close code 1013 instead of a growing delay. While a recent final took more "
        "than half of this, new sessions are refused.",
    )
    realtime_retention: Duration = Field(
        7 * 86400,
        gt=0,
        description="How long a finished realtime session's transcript is kept for `GET /v1/realtime/sessions/{id}` "
        "(`7d`, `12h`, `30m` or seconds); then it is removed.",
    )
    realtime_max_load: float = Field(
        0.7,
        gt=0,
        le=10,
        description="Refuse new realtime sessions (close 1013) while sessions are open and the realtime factor of "
        "the last 30 s (inference seconds per second of utterance audio, queueing included) is above this.",
    )
    realtime_max_cpu: float = Field(
        0.6,
        gt=0,
        le=10,
        description="Refuse a new realtime session (close 1013) when the service's CPU use over the last 30 s plus "
        "what one session costs (learned while sessions run) would pass this share of the CPUs it may use (its "
        "affinity, or a container's CPU quota). The rest is headroom: decodes come in bursts, and a machine near "
        "full use answers late. A value above 1 turns this check off.",
    )
    realtime_speakers: bool = Field(
        True,
        description="Label each utterance of a live session with its speaker (`speaker` in `completed`, the stored "
        "session and the page): a voiceprint's name (`/v1/speakers`) where the voice matches one, else a letter "
        "stable within the session. Costs a speaker embedding per utterance (docs/benchmarks.md). A session turns it "
        "off with `transcription.speakers: \"off\"`.",
    )
    realtime_speaker_threshold: float = Field(
        REALTIME_SPEAKER_THRESHOLD,
        ge=0,
        le=1,
        description="Live labels: cosine similarity of an utterance's voice (or of the session's voice it joined) to a "
        "voiceprint at or above which it takes the voiceprint's name. The default is the measured operating point "
        "for a voiceprint against a 3 s utterance (false accepts at most 1 % of impostor trials; docs/benchmarks.md).",
    )
    realtime_speaker_cluster_threshold: float = Field(
        REALTIME_CLUSTER_THRESHOLD,
        ge=0,
        le=1,
        description="Live labels: cosine similarity of an utterance's voice to a voice already heard in the session "
        "at or above which it is that voice (else a new letter). The default is the equal-error point of 3 s clips "
        "against 3 s clips (docs/benchmarks.md).",
    )
