"""The app factory both services call with their own routes.

    app = create_service_app(
        settings, title="whisper-faster", version="1.0", description="...", metrics_namespace="whisper_faster",
        routers=[transcription_router, models_router], lifespan=my_lifespan,
    )

It wires, once and in this order (outermost first): request id + JSON access log + request metrics, the caller's
owner (API key, trusted edge user or none: whisper_common.auth), its usage counted (whisper_common.usage), its quotas
held on the routes that run inferences (POSTs of `routers`, and `metered_paths`: whisper_common.quotas), the streamed
upload watch (size limit, stalled-body timeout, cut multipart, client gone), the error handlers (OpenAI
error JSON), the form checks on every router (`check_form_body`), local Swagger UI at /docs, /openapi.json shaped to
say what the server does (whisper_common.openapi), /metrics,
`GET /v1/usage` and `DELETE /v1/owners/{me|owner}/data` (whisper_common.usage, whisper_common.erasure),
`GET /health` (alive) and `GET /health/ready` (503 until `mark_ready(app)`; `mark_not_ready(app, reason)` while
it gets there; `mark_failed(app, reason)` when it never will, e.g. a model that cannot be loaded: the answer says
`"status": "failed"` with the reason, which the auto-start proxy passes on to waiting callers at once), `GET /health/activity` (work under way, see whisper_common.activity). `app.state` holds `settings`,
`metrics` (ServiceMetrics), `gate` (InferenceGate), `activity` (ActivityRegistry), `usage` (UsageLedger; a service
opens its table with `serve_usage`), `quotas` (QuotaGuard) and `erasure` (Erasure: each store registers its eraser). The service's
`lifespan(app)` runs inside the app's own; load models there and call `mark_ready(app)` when done, or let
`serve_models(app, settings, loader)` do it:

    async def lifespan(app):
        async with serve_models(app, settings, load_model) as manager:
            app.state.service = MyService(settings, manager, ...)
            yield
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from whisper_common.activity import ActivityRegistry, activity_router
from whisper_common.auth import OPEN_PATH_PREFIXES, OwnerMiddleware, OwnerResolver, bearer_scheme
from whisper_common.concurrency import InferenceGate
from whisper_common.docs_ui import DOCS_PATH, install_docs
from whisper_common.erasure import Erasure, erasure_router
from whisper_common.errors import ApiError, error_body, install_error_handlers
from whisper_common.forms import check_form_body
from whisper_common.keys import KeyRing
from whisper_common.log import RequestContextMiddleware
from whisper_common.metrics import ServiceMetrics, metrics_router
from whisper_common.model_catalog import resolve_model_id
from whisper_common.openapi import install_openapi
from whisper_common.model_manager import ModelManager, hub_cache_bytes
from whisper_common.quotas import QuotaGuard, QuotaMiddleware
from whisper_common.settings import ServiceSettings
from whisper_common.uploads import UploadLimitMiddleware
from whisper_common.usage.ledger import UsageLedger
from whisper_common.usage.meter import UsageMiddleware, inference_observer
from whisper_common.usage.routes import usage_router

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
M = TypeVar("M")
logger = logging.getLogger("whisper_common.app")
LOADING_MODELS = "loading models"


def mark_ready(app: FastAPI) -> None:
    app.state.ready = True
    app.state.failed = False
    app.state.not_ready_reason = None


def mark_not_ready(app: FastAPI, reason: str) -> None:
    """Not ready yet (still starting); /health/ready answers 503 `not_ready`."""
    app.state.ready = False
    app.state.failed = False
    app.state.not_ready_reason = reason


def mark_failed(app: FastAPI, reason: str) -> None:
    """It will not become ready without an operator (a model that cannot be loaded); /health/ready answers 503
    `failed` with the reason."""
    app.state.ready = False
    app.state.failed = True
    app.state.not_ready_reason = reason


@asynccontextmanager
async def serve_models(app: FastAPI, settings: ServiceSettings, loader: Callable[[str], M]) -> AsyncIterator[ModelManager[M]]:
    """The app's ModelManager (`app.state.models`) for its lifespan: PRELOAD_MODELS loaded first (a failure leaves the
    service up but not ready, with the reason), every model unloaded at shutdown."""
    manager: ModelManager[M] = ModelManager(loader, ttl_seconds=settings.model_ttl_seconds, metrics=app.state.metrics)
    app.state.models = manager

    async def preload() -> None:
        try:
            await manager.preload(resolve_model_id(model_id, settings) for model_id in settings.models_to_preload)
            mark_ready(app)
        except ApiError as exc:
            logger.error("preload failed", extra={"reason": exc.message})
            mark_failed(app, f"preload failed: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - the service stays up and says why it is not ready
            logger.exception("preload failed")
            mark_failed(app, f"preload failed: {type(exc).__name__}")

    # In the background, with the server already listening: while a first start downloads a model,
    # /health/ready answers 503 with the download's progress (the auto-start proxy keeps waiting while it grows).
    mark_not_ready(app, LOADING_MODELS)
    preloading = asyncio.create_task(preload(), name="preload models")
    try:
        yield manager
    finally:
        preloading.cancel()
        manager.unload_all()


def health_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/health", summary="Alive", response_model=dict[str, str])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/health/ready",
        summary="Ready: the preloaded models are loaded",
        responses={503: {"description": "`status: not_ready` while loading; `status: failed` with the reason when a "
                         "preload failed (the service will not become ready without an operator)"}},
    )
    async def ready(request: Request) -> JSONResponse:
        state = request.app.state
        if getattr(state, "ready", False):
            return JSONResponse({"status": "ready"})
        reason = getattr(state, "not_ready_reason", None) or "starting"
        if getattr(state, "failed", False):
            return JSONResponse(
                {"status": "failed", **error_body(reason, "server_error", None, "start_failed")}, status_code=503
            )
        body: dict[str, Any] = {"status": "not_ready", **error_body(reason, "server_error", None, "not_ready")}
        if reason == LOADING_MODELS:
            body["progress"] = {"cacheBytes": await asyncio.to_thread(hub_cache_bytes)}
        return JSONResponse(body, status_code=503)

    return router


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    version: str,
    description: str,
    metrics_namespace: str,
    routers: Sequence[APIRouter] = (),
    lifespan: Lifespan | None = None,
    openapi_tags: list[dict[str, Any]] | None = None,
    open_paths: tuple[str, ...] = (),
    metered_paths: tuple[str, ...] = (),
) -> FastAPI:
    metrics = ServiceMetrics(namespace=metrics_namespace)
    usage = UsageLedger(metrics_namespace, metrics.registry, namespace=metrics_namespace)
    metrics.inference_observers.append(inference_observer(usage))
    gate_holder: dict[str, InferenceGate] = {}

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        gate = InferenceGate(settings.max_concurrency, settings.max_queue, settings.retry_after_seconds, metrics)
        app.state.gate = gate
        gate_holder["gate"] = gate
        try:
            if lifespan is None:
                mark_ready(app)
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            gate.shutdown()

    app = FastAPI(
        title=title,
        version=version,
        description=description,
        docs_url=None,
        redoc_url=None,
        lifespan=app_lifespan,
        openapi_tags=openapi_tags,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.ready = False
    app.state.failed = False
    app.state.not_ready_reason = "starting"
    app.state.activity = ActivityRegistry()
    app.state.usage = usage
    app.state.quotas = QuotaGuard(settings.quota, usage, settings.retry_after_seconds)
    app.state.erasure = Erasure()
    install_error_handlers(app)
    install_docs(app)
    app.include_router(health_router())
    app.include_router(activity_router())
    app.include_router(metrics_router(), dependencies=[Depends(bearer_scheme)])
    for router in routers:
        app.include_router(router, dependencies=[Depends(bearer_scheme), Depends(check_form_body)])
    app.include_router(usage_router(), dependencies=[Depends(bearer_scheme)])
    app.include_router(erasure_router(), dependencies=[Depends(bearer_scheme)])
    inference_paths = {
        route.path for router in routers for route in router.routes
        if isinstance(route, APIRoute) and "POST" in (route.methods or ())
    }
    # add_middleware wraps: the last added is the outermost.
    app.add_middleware(
        UploadLimitMiddleware, max_bytes=settings.max_upload_bytes, read_timeout=settings.body_read_timeout_seconds
    )
    # open_paths: pages that hold no data and must load in a browser without a key (the key is asked for there).
    open_prefixes = OPEN_PATH_PREFIXES + open_paths + ((DOCS_PATH, "/openapi.json") if settings.public_docs else ())
    install_openapi(app, settings, open_prefixes)
    app.add_middleware(QuotaMiddleware, guard=app.state.quotas, metered_paths=inference_paths | set(metered_paths))
    app.add_middleware(UsageMiddleware, ledger=usage)
    resolver = OwnerResolver.build(
        KeyRing(settings.api_keys, settings.api_keys_file), settings.trusted_proxies, settings.edge_user_header,
        settings.edge_admin_users,
    )
    app.add_middleware(OwnerMiddleware, resolver=resolver, open_prefixes=open_prefixes)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
