"""The hand-written pages name what the code has: every route and form field of both services, every error code
a service, the proxy's edge or Nginx can answer with. A route, field or error added to the code without a line in
the guide fails here."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parents[2]
API_PAGE = ROOT / "docs" / "api.md"


def service_apps() -> dict[str, FastAPI]:
    from whisper_faster.app import create_app as create_faster
    from whisper_faster.settings import Settings
    from whisperx_api.app import create_app as create_whisperx
    from whisperx_api.settings import WhisperXSettings

    # Building an app loads no model (that happens in its lifespan, which is not run here).
    return {"whisper-faster": create_faster(Settings()), "whisperx": create_whisperx(WhisperXSettings())}


def form_fields(schema: dict[str, Any], operation: dict[str, Any]) -> list[str]:
    content = operation.get("requestBody", {}).get("content", {})
    body = content.get("multipart/form-data", {}).get("schema", {})
    if "$ref" in body:
        body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    return list(body.get("properties", {}))


@pytest.mark.parametrize("service", ["whisper-faster", "whisperx"])
def test_every_route_and_form_field_is_in_the_api_reference(service: str) -> None:
    page = API_PAGE.read_text()
    schema = service_apps()[service].openapi()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert f"{method.upper()} {path}" in page, f"{service}: {method.upper()} {path} is not in docs/api.md"
            for field in form_fields(schema, operation):
                assert f"`{field}`" in page, f"{service}: form field {field!r} of {path} is not in docs/api.md"


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_service_error_code_is_in_the_api_reference() -> None:
    import whisperx_api.align  # noqa: F401 - defines AlignmentUnavailable
    import whisperx_api.diarize.pyannote  # noqa: F401 - defines DiarizationUnavailable
    from whisper_common.errors import ApiError

    page = API_PAGE.read_text()
    codes = {cls.code for cls in _subclasses(ApiError) if cls.code}
    codes |= {"internal_error", "client_disconnected", "not_ready"}  # answered by the handlers and /health/ready
    assert codes, "no error classes found"
    missing = sorted(code for code in codes if f"`{code}`" not in page)
    assert not missing, f"error codes not in docs/api.md: {missing}"


def test_nginx_error_bodies_are_in_the_api_reference() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from stack.nginx_config import NginxConfig, Site, error_bodies

    page = API_PAGE.read_text()
    config = NginxConfig(sites=[Site("whisper.example.com", Path("/c.pem"), Path("/k.pem"))])
    for status, body in error_bodies(config).items():
        if status == 404:
            continue  # the /_autostart/ block, documented under Security and Monitoring
        assert body["error"]["message"] in page, f"Nginx's {status} message is not in docs/api.md"
        assert body["error"]["code"] in page, f"Nginx's {status} code is not in docs/api.md"


@pytest.mark.parametrize("service", ["whisper-faster", "whisperx"])
def test_security_page_names_every_path_open_without_an_api_key(service: str, tmp_path: Path) -> None:
    # With API_KEYS set, ask every route of the real app without a key: what does not answer 401 is open, and
    # docs/security.md must say so (it once listed two of the open paths).
    from whisper_faster.app import create_app as create_faster
    from whisper_faster.settings import Settings
    from whisperx_api.app import create_app as create_whisperx
    from whisperx_api.settings import WhisperXSettings

    settings_class, create_app = {
        "whisper-faster": (Settings, create_faster), "whisperx": (WhisperXSettings, create_whisperx)
    }[service]
    settings = settings_class(api_keys="k1", preload_models="", data_dir=str(tmp_path), jobs_workers=0)
    app = create_app(settings)
    paths = {
        path: next(iter(operations)).upper()
        for path, operations in app.openapi()["paths"].items()
    }
    paths.update({"/docs": "GET", "/openapi.json": "GET"})
    if service == "whisper-faster":
        paths["/realtime"] = "GET"  # the page (not in the schema)
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as client:  # the real lifespan: jobs, live sessions
        open_paths = sorted(
            path for path, method in paths.items()
            if client.request(method, path.replace("{", "").replace("}", "")).status_code != 401
        )
    assert "/health/ready" in open_paths and "/metrics" not in open_paths
    page = (ROOT / "docs" / "security.md").read_text()
    section = page[page.index("## API keys"):]
    section = section[:section.index("\n## ", 1)]
    missing = [path for path in open_paths if f"`{path}`" not in section]
    assert not missing, f"{service}: open without a key but not listed in docs/security.md's API keys: {missing}"
    # And the other way: the docs' /docs and /openapi.json are open only with PUBLIC_DOCS.
    assert "/docs" not in open_paths and "PUBLIC_DOCS=true" in section
