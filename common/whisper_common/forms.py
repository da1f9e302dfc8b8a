"""Form checks FastAPI does not make: a field that takes one value, sent twice, is a 400 naming it.

    app.include_router(router, dependencies=[Depends(reject_repeated_form_fields)])   # create_service_app does this

FastAPI keeps the last of two `file` parts without a word; the client meant one of them, and we cannot know which.
Fields declared as lists (`timestamp_granularities[]`) may repeat. Runs after FastAPI parsed the body (the parsed form
is cached on the request), before the route.
"""
from __future__ import annotations

from collections import Counter

from fastapi import Request
from fastapi._compat import field_annotation_is_sequence

from whisper_common.errors import DuplicateParameter

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def reject_repeated_form_fields(request: Request) -> None:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in _FORM_TYPES:
        return
    form = await request.form()
    counts = Counter(key for key, _ in form.multi_items())
    repeated = [name for name, count in counts.items() if count > 1]
    if not repeated:
        return
    multi_valued = _multi_valued_fields(request)
    for name in repeated:
        if name not in multi_valued:
            raise DuplicateParameter(name, counts[name])


def _multi_valued_fields(request: Request) -> set[str]:
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return set()
    return {
        field.alias for field in dependant.body_params if field_annotation_is_sequence(field.field_info.annotation)
    }
