"""The request options both services share, declared once: as field types (with their validation and documentation)
and as `TranscriptionOptions`, the base of each service's options model. The same model is a route's form
(`Annotated[MyForm, Form(media_type=MULTIPART)]`, with `FormModel`), a job's JSON and, where the fields overlap, a
live session's `transcription` settings.

    class MyOptions(TranscriptionOptions):          # the service's own fields beside the shared ones
        beam_size: Annotated[int, Field(ge=1, le=20)] = 5

    class MyForm(MyOptions, FormModel):             # the route's form: `file` first, then the options
        stream: bool = False

Bad values raise the domain errors of `whisper_common.errors` from inside validation (a 400 naming the field on every
path), so a form, a job and a session answer a bad language with the same message. What needs the loaded model (is
it English-only?) is `check_model_supports`, called before admission with what the name tells and again once the
model is loaded.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Protocol, TypeVar

from fastapi import File, UploadFile
from pydantic import AfterValidator, AliasChoices, AliasGenerator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from whisper_common.errors import InvalidParameter, UnsupportedTask
from whisper_common.languages import language_code
from whisper_common.model_catalog import resolve_model_id
from whisper_common.openai_formats import (
    TRANSCRIPTION_FORMATS,
    ResponseFormat,
    TimestampGranularity,
    parse_granularities,
    parse_response_format,
)
from whisper_common.settings import ServiceSettings
from whisper_common.transcript import Task

MULTIPART = "multipart/form-data"
OptionsT = TypeVar("OptionsT", bound="TranscriptionOptions")


# -- the one language check and the one English-only check ------------------------------------------------------


def checked_language(value: str | None) -> str | None:
    """A language code (`de`) or English name (`German`) as Whisper's code; empty means detect; unknown is a 400."""
    if value is None or not value.strip():
        return None
    code = language_code(value)
    if code is None:
        raise InvalidParameter("language", f"language '{value[:50]}' is not supported; use an ISO-639-1 code such as 'en'")
    return code


class SpeechModel(Protocol):
    """What the English-only check needs of a loaded model (both services' model wrappers have it)."""

    @property
    def model_id(self) -> str: ...

    @property
    def multilingual(self) -> bool: ...


def english_only_by_name(model_id: str) -> bool:
    """Whether the id says the model is English-only (`tiny.en`, `Systran/faster-whisper-base.en`). A local directory
    says nothing (it is checked once loaded)."""
    if os.path.isdir(model_id):
        return False
    return model_id.rsplit("/", 1)[-1].endswith(".en")


def checked_model_id(model: str | None, language: str | None, settings: ServiceSettings, task: Task) -> str:
    """The canonical id of a request's `model`, refused (400) when its name says it cannot do `task` in `language`
    (before loading; `check_model_supports` with the loaded model says it again after)."""
    model_id = resolve_model_id(model, settings)
    check_model_supports(model_id, task, language)
    return model_id


def check_model_supports(model_id: str, task: Task, language: str | None, model: SpeechModel | None = None) -> None:
    """English-only models neither translate nor transcribe other languages: say so (400) instead of guessing.
    Without `model` (before loading) the id decides; with it, the loaded model does."""
    multilingual = model.multilingual if model is not None else not english_only_by_name(model_id)
    if multilingual:
        return
    if task == "translate":
        raise UnsupportedTask(
            "model", f"model '{model_id}' is English-only and cannot translate; use a multilingual model such as 'small'"
        )
    if language not in (None, "en"):
        raise UnsupportedTask(
            "language",
            f"model '{model_id}' is English-only and cannot transcribe language '{language}'; use a multilingual model "
            "such as 'small'",
        )


# -- field types: each shared field declared once ---------------------------------------------------------------


def _blank_is_none(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


def _granularities(value: Any) -> Any:
    values = [value] if isinstance(value, str) else value
    if values is None:
        return None
    return sorted(item.value for item in parse_granularities(values, ResponseFormat.VERBOSE_JSON))


ModelName = Annotated[
    str | None,
    Field(
        description="`tiny.en` (embedded), a size name (`small`, `large-v3`), a Hugging Face repo id, or a model the "
        "operator configured. Unset (or `whisper-1`): WHISPER__MODEL."
    ),
]
Language = Annotated[
    str | None,
    AfterValidator(checked_language),
    Field(description="ISO-639-1 code (or English name) of the spoken language; unset: detected."),
]
Prompt = Annotated[
    str | None,
    AfterValidator(_blank_is_none),
    Field(description="Text to guide the style or vocabulary, or to continue a previous segment (Whisper's prompt)."),
]
Temperature = Annotated[
    float | None, Field(ge=0.0, le=1.0, description="Sampling temperature 0-1. Unset: the engine's fallback 0, 0.2, ... 1.")
]
HallucinationGuard = Annotated[
    bool,
    Field(
        description="Extension: keep text nobody said out of the result (default true): audio without speech gives no "
        "text, a word or phrase repeated more than four times in a row is cut. `false`: the model's raw output.",
        # Left out of dumps while on: a job's stored options keep the form they had before the field existed.
        exclude_if=lambda value: value is True,
    ),
]
TimestampGranularities = Annotated[
    list[str] | None,
    BeforeValidator(_granularities),
    Field(
        description="`segment` and/or `word` (`timestamp_granularities[]` in a form). Words need `verbose_json`; "
        "`word` alone: words without segments."
    ),
]


def response_format_type(formats: Sequence[ResponseFormat]) -> Any:
    """The `response_format` field of a model offering `formats` (the first is the default); another is a 400."""
    names = tuple(item.value for item in formats)
    listed = ", ".join(f"`{name}`" for name in names[1:-1])
    description = f"`{names[0]}` (default), {listed} or `{names[-1]}`." if len(names) > 2 else f"`{names[0]}` (default)."

    def parse(value: Any) -> str | None:
        return parse_response_format(value, allowed=formats).value if value is not None and value != "" else None

    return Annotated[Literal[names] | None, BeforeValidator(parse), Field(description=description)]  # type: ignore[valid-type]


# -- the options every transcription has ------------------------------------------------------------------------


class TranscriptionOptions(BaseModel):
    """The options both services' transcriptions share. As JSON (a job), an unknown field is a 400."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName = None
    language: Language = None
    prompt: Prompt = None
    response_format: response_format_type(TRANSCRIPTION_FORMATS) = None  # type: ignore[valid-type]
    temperature: Temperature = None
    timestamp_granularities: TimestampGranularities = None
    hallucination_guard: HallucinationGuard = True

    @property
    def output_format(self) -> ResponseFormat:
        return ResponseFormat(self.response_format or ResponseFormat.JSON)

    @property
    def word_timestamps(self) -> bool:
        return TimestampGranularity.WORD.value in (self.timestamp_granularities or ())


# -- as a multipart form ----------------------------------------------------------------------------------------

FORM_ARRAYS = ("timestamp_granularities",)
"""List fields OpenAI's SDK sends as `name[]`; a form may use either name (both are merged)."""


def _form_alias(name: str) -> AliasChoices | None:
    return AliasChoices(f"{name}[]", name) if name in FORM_ARRAYS else None


class FormModel(BaseModel):
    """Mixed in last (`class MyForm(MyOptions, FormModel)`): the audio `file` part first, `name[]` or `name` for the
    list fields OpenAI's SDK sends with brackets, and unknown fields ignored as OpenAI's API ignores them."""

    model_config = ConfigDict(extra="ignore", alias_generator=AliasGenerator(validation_alias=_form_alias))

    file: UploadFile = File(description="The audio file (any format FFmpeg reads: flac, mp3, wav, ogg, m4a, webm, ...).")

    @model_validator(mode="before")
    @classmethod
    def _both_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name in FORM_ARRAYS:
            if f"{name}[]" in data and name in data:
                data = dict(data)
                data[f"{name}[]"] = [*_as_list(data[f"{name}[]"]), *_as_list(data.pop(name))]
        return data

    def options_as(self, model: type[OptionsT]) -> OptionsT:
        """This form's values as `model` (validated as a job's JSON would be)."""
        return model.model_validate(self.model_dump(include=set(model.model_fields) & set(type(self).model_fields)))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]
