"""The errors a voiceprint client can cause, each mapped once to a status by whisper_common.errors."""
from __future__ import annotations

from whisper_common.errors import ApiError, InvalidParameter, NotFound


class SpeakerNotFound(NotFound):
    """No voiceprint with this id, or one of another owner (404 alike: existence is not revealed)."""

    code = "speaker_not_found"

    def __init__(self, speaker_id: str, param: str = "id") -> None:
        super().__init__(f"no speaker '{speaker_id[:80]}'", param=param)


class SpeakerNameTaken(ApiError):
    """The caller already has a voiceprint of this name (409): add samples to it, or delete it first."""

    status_code = 409
    code = "speaker_name_taken"

    def __init__(self, name: str, speaker_id: str) -> None:
        super().__init__(
            f"you already have a speaker named '{name}' ({speaker_id}); add clips with POST /v1/speakers/{speaker_id}"
            "/samples, or delete it first", param="name",
        )


class LibraryFull(ApiError):
    """SPEAKERS__MAX_VOICEPRINTS or SPEAKERS__MAX_SAMPLES reached (400)."""

    code = "speaker_limit_reached"

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, param=param)


class StaleVoiceprint(InvalidParameter):
    """A voiceprint asked for by name was made by another embedding model than the one running (400): comparing
    them would mis-match silently."""

    code = "voiceprint_stale"


class EncoderUnavailable(ApiError):
    """The speaker encoder's weights are not installed in this service (503): the resemblyzer package ships them."""

    status_code = 503
    error_type = "server_error"
    code = "speakers_unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(f"speaker recognition is not available on this server: {reason}")
