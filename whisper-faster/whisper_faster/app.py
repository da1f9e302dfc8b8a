"""`create_app(settings)`: the whisper-faster FastAPI app (shared wiring from whisper_common, routes from here)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from whisper_common.app import create_service_app, serve_models
from whisper_common.batching.runtime import serve_batching
from whisper_common.jobs import include_jobs_routes, serve_jobs
from whisper_common.models_routes import models_router
from whisper_common.speakers import serve_speakers, speakers_router
from whisper_common.transcripts import serve_transcripts, transcripts_router
from whisper_common.usage import serve_usage
from whisper_faster import __version__
from whisper_faster.jobs import FasterJobEngine
from whisper_faster.models import load_model
from whisper_faster.realtime import route as realtime
from whisper_faster.routes import transcriptions
from whisper_faster.service import TranscriptionService
from whisper_faster.settings import Settings

DESCRIPTION = """OpenAI-compatible speech to text on faster-whisper, offline by default.

Use it like OpenAI's Audio API (`base_url=".../v1"` in the `openai` client). Extensions to OpenAI's form fields:
`beam_size`, `vad_filter`, `hotwords`. `/v1/speakers` is the caller's voiceprint library: live sessions
(`/v1/realtime`) label each utterance's speaker with its names. Errors use OpenAI's `{"error": {"message", "type", "param", "code"}}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = partial(load_model, settings=settings)
        async with (serve_usage(app, settings), serve_transcripts(app, settings, service="whisper_faster") as transcripts,
                    serve_models(app, settings, loader) as manager,
                    serve_batching(app, settings, settings.scheduler, namespace="whisper_faster",
                                   in_flight=settings.scheduler.windows_in_flight) as batching,
                    serve_speakers(app, settings, settings.speakers)):
            app.state.service = TranscriptionService(settings, manager, app.state.gate, app.state.metrics, batching)
            engine = FasterJobEngine(app.state.service)
            async with (realtime.serve_realtime(app, settings, manager, transcripts),
                        serve_jobs(app, settings, engine, metrics_namespace="whisper_faster", transcripts=transcripts)):
                yield

    app = create_service_app(
        settings,
        title="whisper-faster",
        version=__version__,
        description=DESCRIPTION,
        metrics_namespace="whisper_faster",
        routers=[transcriptions.router, models_router(), realtime.router, transcripts_router(), speakers_router()],
        lifespan=lifespan,
        open_paths=(realtime.PAGE_PATH,),
        metered_paths=(realtime.SOCKET_PATH,),
    )
    realtime.install(app)
    include_jobs_routes(app, FasterJobEngine.options_model, FasterJobEngine.formats)
    return app
