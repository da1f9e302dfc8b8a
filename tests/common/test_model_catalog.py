"""Model-id resolution and load-failure naming shared by both services (no server, no download)."""
from __future__ import annotations

import re

import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from whisper_common.errors import InvalidParameter, ModelLoadError, ModelNotFound
from whisper_common.model_catalog import (
    EMBEDDED_MODEL,
    describe_load_failure,
    embedded_model_dir,
    model_location,
    model_id_schema,
    resolve_model_id,
)
from whisper_common.settings import ServiceSettings


def _settings(**values: object) -> ServiceSettings:
    return ServiceSettings.model_validate(values)


def test_aliases_and_default() -> None:
    settings = _settings()
    assert resolve_model_id(None, settings) == EMBEDDED_MODEL
    assert resolve_model_id("whisper-1", settings) == EMBEDDED_MODEL
    assert resolve_model_id("Systran/faster-whisper-tiny.en", settings) == EMBEDDED_MODEL
    assert resolve_model_id("small", settings) == "small"
    assert resolve_model_id("Systran/faster-whisper-small", settings) == "Systran/faster-whisper-small"


@pytest.mark.parametrize("model_id", ["../etc", "/etc", "a/b/c", "owner/..hidden", "tiny.en\n", " tiny.en"])
def test_paths_are_rejected_before_any_file_access(model_id: str) -> None:
    with pytest.raises(InvalidParameter) as raised:
        resolve_model_id(model_id, _settings())
    assert raised.value.param == "model" and "invalid model id" in raised.value.message


def test_unknown_size_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelNotFound) as raised:
        resolve_model_id("gigantic-v9", _settings())
    assert "gigantic-v9" in raised.value.message and "tiny.en" in raised.value.message


def test_operator_configured_directory_is_loaded_as_a_path(tmp_path) -> None:
    directory = str(tmp_path)
    settings = _settings(whisper={"model": directory})
    assert resolve_model_id("whisper-1", settings) == directory
    assert model_location(directory, settings) == directory
    assert model_location(EMBEDDED_MODEL, settings) == str(embedded_model_dir())
    assert (embedded_model_dir() / "model.bin").is_file()


def test_load_failures_are_named() -> None:
    not_cached = describe_load_failure("base", LocalEntryNotFoundError("offline"))
    assert isinstance(not_cached, ModelNotFound) and "Hugging Face" in not_cached.message
    bad_size = describe_load_failure("huge", ValueError("Invalid model size 'huge'"))
    assert isinstance(bad_size, ModelNotFound)
    broken = describe_load_failure("x/y", RuntimeError("Unable to open file 'model.bin'\nmore"))
    assert isinstance(broken, ModelLoadError) and "Unable to open file 'model.bin'" in broken.message
    assert "more" not in broken.message


@pytest.mark.parametrize(
    "model_id",
    ["tiny.en", "whisper-1", "Systran/faster-whisper-small", "x.", "a_b-c.d", "a" * 193,
     "", "..", "a..b", "../etc", "/etc", "a/b/c", "-x", "a b", "tiny.en\n", "a" * 194, "/srv/models/base"],
)
def test_schema_pattern_agrees_with_the_server(model_id: str, tmp_path) -> None:
    """What /openapi.json declares a valid `model` is exactly what resolve_model_id accepts (schemathesis relies on it)."""
    settings = _settings(whisper={"model": "/srv/models/base"})
    schema = model_id_schema(settings, empty_means_default=True)  # a form field left empty means the default
    declared_valid = bool(re.fullmatch(schema["pattern"], model_id)) and len(model_id) <= schema["maxLength"]
    try:
        resolve_model_id(model_id, settings)
        accepted = True
    except InvalidParameter:
        accepted = False
    except ModelNotFound:
        accepted = True  # a well-formed id the server does not have: 404, not "invalid"
    assert declared_valid == accepted, (model_id, schema)


def test_an_id_the_hub_refuses_is_not_found_not_a_server_error() -> None:
    """`0/0.0.` is well formed here but not a valid repo id for the hub: 404 naming why, not a 503 load failure."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id("0/0.0.")
    except Exception as exc:  # noqa: BLE001 - the hub's own validator decides
        described = describe_load_failure("0/0.0.", exc)
    assert isinstance(described, ModelNotFound) and "not a valid Hugging Face repo id" in described.message
