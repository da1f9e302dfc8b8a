"""Long recordings as jobs: submitted over HTTP, persisted, run by workers under leases, reported by signed webhooks.

A service wires it like its transcription routes, handing in its own engine call (the core knows no service):

    app = create_service_app(settings, ..., lifespan=lifespan)
    include_jobs_routes(app, MyJobOptions, MY_FORMATS)

    async def lifespan(app):
        async with serve_models(...) as manager:
            app.state.service = MyService(...)
            async with serve_jobs(app, settings, MyJobEngine(app.state.service), metrics_namespace="my_service"):
                yield

The parts: `routes` (the HTTP surface: parse, call the service, format) over `service` (submit, get, result, cancel,
list), which reads and writes the queue through `store` (`sqlite`/`postgres`, on the database layer) and the audio
through `files` (`intake` streams uploads into DATA_DIR). `context` is what the service, the workers and the outbox
share, fixed at start-up (store, files, outbound rules and client, signer, metrics, retry policy, timings); `runner`
owns what runs in this process (`worker` loops with leases, the `outbox` of Standard Webhooks signed by `signer`,
the janitor, the queue `counts`) and the jobs its workers hold. `retry` is the backoff policy, `outbound` the SSRF
rules, `runtime` the lifespan that puts them together, `contract` the engine a service implements and `records` the rows a job is kept in. See docs/jobs.md.
"""
from whisper_common.jobs.contract import JobEngine, JobOptions, ProgressCallback
from whisper_common.jobs.routes import include_jobs_routes, jobs_router
from whisper_common.jobs.runtime import serve_jobs
from whisper_common.jobs.service import JobsService

__all__ = ["JobEngine", "JobOptions", "JobsService", "ProgressCallback", "include_jobs_routes", "jobs_router", "serve_jobs"]
