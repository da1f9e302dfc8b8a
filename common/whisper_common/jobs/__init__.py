"""Long recordings as jobs: submitted over HTTP, persisted, run by workers under leases, reported by signed webhooks.

A service wires it like its transcription routes, handing in its own engine call (the core knows no service):

    app = create_service_app(settings, ..., lifespan=lifespan)
    include_jobs_routes(app, MyJobOptions, MY_FORMATS)

    async def lifespan(app):
        async with serve_models(...) as manager:
            app.state.service = MyService(...)
            async with serve_jobs(app, settings, MyJobEngine(app.state.service), metrics_namespace="my_service"):
                yield

Modules: `routes` (the HTTP surface), `intake` (streamed uploads into DATA_DIR), `store`/`sqlite`/`postgres` (the
queue), `worker` (leases, retries), `outbox`/`signer` (Standard Webhooks), `outbound` (SSRF rules), `runtime` (the
lifespan), `metrics`, `engine` (the contract a service implements). See docs/jobs.md.
"""
from whisper_common.jobs.engine import JobEngine, JobOptions, ProgressCallback
from whisper_common.jobs.routes import include_jobs_routes, jobs_router
from whisper_common.jobs.runtime import JobsRuntime, serve_jobs

__all__ = ["JobEngine", "JobOptions", "JobsRuntime", "ProgressCallback", "include_jobs_routes", "jobs_router", "serve_jobs"]
