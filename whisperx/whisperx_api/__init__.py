"""whisperx_api: the WhisperX service (batched transcription, word timings, diarization)."""

__version__ = "1.0.0"
