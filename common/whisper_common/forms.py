"""Form checks FastAPI does not make, for routes whose body is a form (`Form`/`File` parameters, or a form model:
`Annotated[MyForm, Form()]`, see whisper_common.options).

    app.include_router(router, dependencies=[Depends(check_form_body)])   # create_service_app does this

- A body that is not a form at all (JSON, say) is a 400 saying so, not "'file' is required".
- A field that takes one value, sent twice, is a 400 naming it: FastAPI keeps the last of two `file` parts without a
  word; the client meant one of them, and we cannot know which. Fields declared as lists
  (`timestamp_granularities[]`, under each of their names) may repeat.
Runs after FastAPI parsed the body (the parsed form is cached on the request), before the route's own validation.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import Request, params
from starlette.requests import HTTPConnection
from fastapi._compat import field_annotation_is_sequence
from pydantic import AliasChoices, BaseModel

from whisper_common.errors import DuplicateParameter, InvalidBody

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def check_form_body(connection: HTTPConnection) -> None:
    if not isinstance(connection, Request):  # a WebSocket route has no body
        return
    request = connection
    body_params = _body_params(request)
    if not any(isinstance(field.field_info, params.Form) for field in body_params):
        return
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in _FORM_TYPES:
        raise InvalidBody(
            f"the request body must be multipart/form-data (got {content_type[:100] or 'no Content-Type'}): send the "
            "audio as the 'file' part and the options as form fields"
        )
    form = await request.form()
    counts = Counter(key for key, _ in form.multi_items())
    repeated = [name for name, count in counts.items() if count > 1]
    if not repeated:
        return
    multi_valued = {
        name for field in body_params for name, annotation in _form_fields(field) if field_annotation_is_sequence(annotation)
    }
    for name in repeated:
        if name not in multi_valued:
            raise DuplicateParameter(name, counts[name])


def _form_fields(field: Any) -> list[tuple[str, Any]]:
    """(name in the form, annotation) of a body parameter, or of each field of a form model (every name it accepts)."""
    annotation = field.field_info.annotation
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return [(field.alias, annotation)]
    names = []
    for name, info in annotation.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias or info.alias or name]
        names += [(str(choice), info.annotation) for choice in choices]
    return names


def _body_params(request: Request) -> list[Any]:
    dependant = getattr(request.scope.get("route"), "dependant", None)
    return list(dependant.body_params) if dependant is not None else []
