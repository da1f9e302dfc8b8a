"""`/openapi.json` shaped to say what the server does, for every route of an app (later routes included).

    install_openapi(app, settings, open_prefixes)        # create_service_app does this

FastAPI's generated schema is close but not exact for these services; this fixes it once, at the edge, for all routes:
- no 422 (validation errors are 400 with OpenAI's error body), and every error response carries that body;
- operations with parameters or a body document 400, operations with a body also 408 (stalled upload) and 413;
- with authentication configured (API_KEYS, API_KEYS_FILE or TRUSTED_PROXIES), every operation outside
  `open_prefixes` requires the bearer scheme and documents 401; without, no operation declares security at all (the
  server asks for none);
- form fields marked `include_in_schema=False` (hidden aliases) are left out of request bodies;
- a multipart field cannot be JSON null (leaving it out means the default), so form fields are not declared nullable;
  an empty optional form field also means the default (FastAPI reads `""` as not given), and the schema allows it;
- model ids (`model` form fields, `model_id` path parameters) carry the pattern `resolve_model_id` enforces.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from whisper_common.model_catalog import model_id_schema
from whisper_common.schemas import ErrorResponse
from whisper_common.settings import ServiceSettings

BEARER = "HTTPBearer"
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_MULTIPART = "multipart/form-data"
_GENERIC_ERRORS = {
    "400": "Invalid parameter or body (OpenAI error JSON naming it)",
    "401": "Missing or wrong API key",
    "408": "The upload stalled: no bytes for BODY_READ_TIMEOUT_SECONDS",
    "413": "Request body over MAX_UPLOAD_MB",
}


def install_openapi(app: FastAPI, settings: ServiceSettings, open_prefixes: tuple[str, ...]) -> None:
    build: Callable[[], dict[str, Any]] = app.openapi
    shaped: list[int] = []

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI's cached schema, rebuilt when routes are added
        if shaped[-1:] != [id(schema)]:
            shape_openapi(schema, app, settings, open_prefixes)
            shaped[:] = [id(schema)]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def shape_openapi(
    schema: dict[str, Any], app: FastAPI, settings: ServiceSettings, open_prefixes: tuple[str, ...]
) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in error_schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas.setdefault("ErrorResponse", error_schema)
    hidden = _hidden_body_fields(app)
    protected = settings.authentication_configured
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if protected and not path.startswith(open_prefixes):
                operation["security"] = [{BEARER: []}]
                _add_error(responses, "401")
            else:
                operation.pop("security", None)
            if operation.get("parameters") or operation.get("requestBody"):
                _add_error(responses, "400")
            if operation.get("requestBody"):
                _add_error(responses, "408")
                _add_error(responses, "413")
            for status, response in responses.items():
                if status[:1] in ("4", "5") and not response.get("content"):
                    response["content"] = {"application/json": {"schema": dict(_ERROR_REF)}}
            for parameter in operation.get("parameters", ()):
                if parameter.get("in") == "path" and parameter.get("name") == "model_id":
                    parameter["schema"] = {**_keep_docs(parameter.get("schema", {})), **model_id_schema(settings, empty_means_default=False)}
            _shape_form_body(schemas, operation, settings, hidden.get((path, method), ()))
    security_schemes = components.setdefault("securitySchemes", {})
    if protected:
        security_schemes.setdefault(
            BEARER, {"type": "http", "scheme": "bearer", "description": "An API key (API_KEYS or API_KEYS_FILE)."}
        )
    else:
        security_schemes.pop(BEARER, None)
    if not security_schemes:
        components.pop("securitySchemes")
    return schema


def _add_error(responses: dict[str, Any], status: str) -> None:
    responses.setdefault(
        status, {"description": _GENERIC_ERRORS[status], "content": {"application/json": {"schema": dict(_ERROR_REF)}}}
    )


def _keep_docs(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: schema[key] for key in ("title", "description") if key in schema}


def _hidden_body_fields(app: FastAPI) -> dict[tuple[str, str], tuple[str, ...]]:
    hidden: dict[tuple[str, str], tuple[str, ...]] = {}
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        names = tuple(
            field.alias for field in route.dependant.body_params if not getattr(field.field_info, "include_in_schema", True)
        )
        for method in route.methods or () if names else ():
            hidden[(route.path_format, method.lower())] = names
    return hidden


def _shape_form_body(
    schemas: dict[str, Any], operation: dict[str, Any], settings: ServiceSettings, hidden: tuple[str, ...]
) -> None:
    content = operation.get("requestBody", {}).get("content", {})
    for media_type in (_MULTIPART, "application/x-www-form-urlencoded"):
        body_schema = content.get(media_type, {}).get("schema")
        if not body_schema:
            continue
        ref = body_schema.get("$ref", "")
        target = schemas.get(ref.rsplit("/", 1)[-1]) if ref else body_schema
        if not target:
            continue
        properties: dict[str, Any] = target.get("properties", {})
        for name in hidden:
            properties.pop(name, None)
            if name in target.get("required", ()):
                target["required"].remove(name)
        required = set(target.get("required", ()))
        for name, prop in list(properties.items()):
            prop = _without_null(prop)
            if name == "model":
                prop = {**_keep_docs(prop), **model_id_schema(settings, empty_means_default=False)}
            properties[name] = prop if name in required else _empty_means_default(prop)


_CONSTRAINTS = ("format", "pattern", "enum", "const", "minLength")
_DOC_KEYS = ("title", "description", "default")


def _empty_means_default(prop: dict[str, Any]) -> dict[str, Any]:
    """FastAPI reads an empty form value as "not given" (the default): say so where the field's own schema would
    not allow `""` (numbers, booleans, patterns, formats, enums). Lists are left alone (empty items are dropped)."""
    if prop.get("type") == "array" or "anyOf" in prop:
        return prop
    if prop.get("type") == "string" and not any(key in prop for key in _CONSTRAINTS):
        return prop
    core = {key: value for key, value in prop.items() if key not in _DOC_KEYS}
    docs = {key: value for key, value in prop.items() if key in _DOC_KEYS}
    return {"anyOf": [core, {"type": "string", "maxLength": 0, "description": "Empty: the default."}], **docs}


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` -> X (keeping the field's title, description and default)."""
    options = prop.get("anyOf")
    if not options:
        return prop
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) == len(options):
        return prop
    rest = {key: value for key, value in prop.items() if key != "anyOf" and not (key == "default" and value is None)}
    if len(kept) == 1:
        return {**kept[0], **rest}
    return {"anyOf": kept, **rest}
