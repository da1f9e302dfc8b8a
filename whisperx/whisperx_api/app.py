"""`create_app(settings)`: the WhisperX FastAPI app (shared wiring from whisper_common, routes from here)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from whisper_common.app import create_service_app, serve_models
from whisper_common.batching.runtime import serve_batching
from whisper_common.jobs import include_jobs_routes, serve_jobs
from whisper_common.model_catalog import default_compute_type, inference_device
from whisper_common.models_routes import models_router
from whisper_common.transcripts import serve_transcripts, transcripts_router
from whisper_common.speakers import serve_speakers, speakers_router
from whisper_common.usage import serve_usage
from whisperx_api import __version__
from whisperx_api.align import WordAligner
from whisperx_api.diarize.select import Diarizers
from whisperx_api.jobs import WhisperXJobEngine
from whisperx_api.models import LoaderOptions, WhisperXLoader
from whisperx_api.pipeline import TranscriptionPipeline
from whisperx_api.routes import openai, transcribe
from whisperx_api.service import WhisperXService
from whisperx_api.settings import WhisperXSettings

DESCRIPTION = """WhisperX: transcription with word-level timestamps and speaker diarization, offline by default.

`POST /transcribe` is the WhisperX API (words, speakers, the diarizer's turns, `alignment` and `diarization` naming
the methods used). `/v1/audio/transcriptions` is OpenAI-compatible (`base_url=".../v1"` in the `openai` client) and
adds `response_format=diarized_json`. `/v1/speakers` is the caller's voiceprint library: `speakers=library` (or
names) on a transcription names the speakers it recognises. Errors use OpenAI's
`{"error": {"message", "type", "param", "code"}}`.
"""


def create_app(settings: WhisperXSettings | None = None) -> FastAPI:
    settings = settings or WhisperXSettings()
    device = inference_device(settings.whisper.inference_device)
    loader = WhisperXLoader(
        LoaderOptions(
            device=device,
            device_index=settings.whisper.device_index,
            compute_type=default_compute_type(settings.whisper.compute_type, device),
            cpu_threads=settings.whisper.cpu_threads,
            num_workers=settings.whisper.num_workers,
        ),
        settings,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (serve_usage(app, settings), serve_transcripts(app, settings, service="whisperx") as transcripts,
                    serve_models(app, settings, loader) as manager,
                    serve_batching(app, settings, settings.scheduler, namespace="whisperx", in_flight=1) as batching,
                    serve_speakers(app, settings, settings.speakers) as library):
            diarizers = Diarizers(settings, device, encoder=library.encoder)
            pipeline = TranscriptionPipeline(
                WordAligner(settings.alignment, device), diarizers, settings.vad, settings.batch_size, batching,
            )
            app.state.service = WhisperXService(settings, manager, pipeline, app.state.gate, app.state.metrics)
            engine = WhisperXJobEngine(app.state.service, library)
            async with serve_jobs(app, settings, engine, metrics_namespace="whisperx", transcripts=transcripts):
                yield

    app = create_service_app(
        settings,
        title="whisperx",
        version=__version__,
        description=DESCRIPTION,
        metrics_namespace="whisperx",
        routers=[transcribe.router, openai.router, models_router(), speakers_router(), transcripts_router()],
        lifespan=lifespan,
    )
    include_jobs_routes(app, WhisperXJobEngine.options_model, WhisperXJobEngine.formats)
    return app
