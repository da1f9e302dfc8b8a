"""The OpenAPI shaping of create_service_app, on a small app (no server, no model): the schema says what the
server does. tests/probe/test_schemathesis.py checks the real services against their schemas."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from whisper_common.app import create_service_app
from whisper_common.settings import ServiceSettings

router = APIRouter()


@router.post("/v1/upload")
async def upload(
    file: Annotated[UploadFile, File()],
    model: Annotated[str | None, Form()] = None,
    temperature: Annotated[float | None, Form(ge=0, le=1)] = None,
    alias: Annotated[list[str] | None, Form(alias="hidden", include_in_schema=False)] = None,
) -> dict[str, str]:
    return {}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str) -> dict[str, str]:
    return {}


def _schema(**settings: Any) -> dict[str, Any]:
    app = create_service_app(
        ServiceSettings.model_validate(settings), title="t", version="1", description="d", metrics_namespace="t",
        routers=[router],
    )
    return app.openapi()


def _form(schema: dict[str, Any]) -> dict[str, Any]:
    body = schema["paths"]["/v1/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    return schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]


def test_without_keys_nothing_declares_security() -> None:
    schema = _schema()
    assert "securitySchemes" not in schema.get("components", {})
    for operations in schema["paths"].values():
        for operation in operations.values():
            assert "security" not in operation and "401" not in operation["responses"]


def test_with_keys_every_protected_operation_requires_the_key_and_documents_401() -> None:
    schema = _schema(api_keys="k1")
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path.startswith("/health"):
                assert "security" not in operation
            else:
                assert operation["security"] == [{"HTTPBearer": []}], path
                assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorResponse"
                }


def test_errors_are_documented_and_422_is_gone() -> None:
    responses = _schema()["paths"]["/v1/upload"]["post"]["responses"]
    assert "422" not in responses and {"400", "408", "413"} <= set(responses)


def test_metrics_is_documented_as_text() -> None:
    responses = _schema()["paths"]["/metrics"]["get"]["responses"]
    assert list(responses["200"]["content"]) == ["text/plain"]


def test_forms_leave_out_hidden_fields_and_null_and_allow_empty_for_defaults() -> None:
    form = _form(_schema())
    assert "hidden" not in form["properties"]
    temperature = form["properties"]["temperature"]
    assert {"type": "null"} not in temperature["anyOf"]
    assert {"type": "number", "minimum": 0.0, "maximum": 1.0} in temperature["anyOf"]
    assert any(option.get("maxLength") == 0 for option in temperature["anyOf"])  # empty: the default


def test_model_ids_carry_the_servers_pattern() -> None:
    schema = _schema(whisper={"model": "/srv/models/base"})
    parameter = schema["paths"]["/v1/models/{model_id}"]["get"]["parameters"][0]
    assert "/srv/models/base" in parameter["schema"]["pattern"].replace("\\", "")
    model = _form(schema)["properties"]["model"]
    assert model["anyOf"][0]["pattern"] == parameter["schema"]["pattern"]


def test_the_schema_is_rebuilt_when_routes_are_added_later() -> None:
    app = create_service_app(ServiceSettings(), title="t", version="1", description="d", metrics_namespace="t")
    assert "/later" not in app.openapi()["paths"]
    late = APIRouter()

    @late.post("/later")
    async def later(value: Annotated[int | None, Form()] = None) -> dict[str, str]:
        return {}

    app.include_router(late)
    assert "422" not in app.openapi()["paths"]["/later"]["post"]["responses"]
