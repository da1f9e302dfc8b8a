"""`GET /v1/models` and `GET /v1/models/{id}` in OpenAI's shape (`{"object": "list", "data": [...]}`), for any service
whose app holds `state.settings` (ServiceSettings) and `state.models` (its ModelManager)."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from whisper_common import model_catalog
from whisper_common.errors import ModelNotFound
from whisper_common.model_manager import ModelManager
from whisper_common.settings import ServiceSettings

_CREATED = 1_700_000_000


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = _CREATED
    owned_by: str
    loaded: bool = Field(description="Extension: the model is in memory now.")
    default: bool = Field(False, description="Extension: requests without a model (or with `whisper-1`) use it.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


def _owner(model_id: str) -> str:
    if model_id == model_catalog.EMBEDDED_MODEL:
        return "Systran"
    if model_catalog.is_local_directory(model_id):
        return "local"
    return model_id.split("/", 1)[0] if "/" in model_id else "Systran"


def _available(settings: ServiceSettings, manager: ModelManager[Any]) -> list[str]:
    ids: list[str] = [model_catalog.EMBEDDED_MODEL]
    for candidate in [
        settings.whisper.model,
        *settings.models_to_preload,
        *manager.loaded(),
        *model_catalog.cached_hub_models(),
    ]:
        canonical = model_catalog.EMBEDDED_MODEL if candidate in model_catalog.EMBEDDED_ALIASES else candidate
        if canonical not in ids:
            ids.append(canonical)
    return ids


def _describe(
    settings: ServiceSettings, manager: ModelManager[Any], model_id: str, shown_id: str | None = None
) -> ModelObject:
    return ModelObject(
        id=shown_id or model_id,
        owned_by=_owner(model_id),
        loaded=manager.is_loaded(model_id),
        default=model_id == model_catalog.resolve_model_id(None, settings),
    )


def models_router() -> APIRouter:
    router = APIRouter(prefix="/v1/models", tags=["models"])

    @router.get("", summary="List the models available here", response_model=ModelList)
    async def list_models(request: Request) -> ModelList:
        settings: ServiceSettings = request.app.state.settings
        manager: ModelManager[Any] = request.app.state.models
        data = [_describe(settings, manager, model_id) for model_id in _available(settings, manager)]
        default_id = model_catalog.resolve_model_id(None, settings)
        data.append(_describe(settings, manager, default_id, model_catalog.OPENAI_ALIAS))
        return ModelList(data=data)

    @router.get(
        "/{model_id:path}",
        summary="Describe one model",
        response_model=ModelObject,
        responses={404: {"description": "Not available here"}, 400: {"description": "Invalid id"}},
    )
    async def get_model(request: Request, model_id: str) -> ModelObject:
        settings: ServiceSettings = request.app.state.settings
        manager: ModelManager[Any] = request.app.state.models
        canonical = model_catalog.resolve_model_id(model_id, settings)
        if canonical not in _available(settings, manager):
            raise ModelNotFound(
                model_id, "not available locally (it is downloaded on first use when the hub is reachable)"
            )
        shown_id = model_id if model_id == model_catalog.OPENAI_ALIAS else None
        return _describe(settings, manager, canonical, shown_id)

    return router
