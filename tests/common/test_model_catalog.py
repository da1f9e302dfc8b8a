"""Model-id resolution and load-failure naming shared by both services (no server, no download)."""
from __future__ import annotations

import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from whisper_common.errors import InvalidParameter, ModelLoadError, ModelNotFound
from whisper_common.model_catalog import (
    EMBEDDED_MODEL,
    describe_load_failure,
    embedded_model_dir,
    model_location,
    resolve_model_id,
)
from whisper_common.settings import ServiceSettings


def _settings(**values: object) -> ServiceSettings:
    return ServiceSettings.model_validate(values)


def test_aliases_and_default() -> None:
    settings = _settings()
    assert resolve_model_id(None, settings) == EMBEDDED_MODEL
    assert resolve_model_id(" whisper-1 ", settings) == EMBEDDED_MODEL
    assert resolve_model_id("Systran/faster-whisper-tiny.en", settings) == EMBEDDED_MODEL
    assert resolve_model_id("small", settings) == "small"
    assert resolve_model_id("Systran/faster-whisper-small", settings) == "Systran/faster-whisper-small"


@pytest.mark.parametrize("model_id", ["../etc", "/etc", "a/b/c", "owner/..hidden"])
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
