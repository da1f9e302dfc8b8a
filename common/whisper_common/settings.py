"""Configuration shared by both services, read from the environment (pydantic-settings).

Each service subclasses `ServiceSettings` (adding its own fields) and reads it once: `settings = MySettings()`.
Nested fields use `__`: `WHISPER__MODEL=small` sets `settings.whisper.model`. Every field has a type, bounds, a default
and a description, so the docs' configuration reference can be generated from `model_fields` (see `describe_settings`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

InferenceDevice = Literal["auto", "cpu", "cuda"]


def split_comma_list(value: Any) -> Any:
    """`"a, b,,c"` -> `["a", "b", "c"]`; lists pass through."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """`"7d"`, `"12h"`, `"30m"`, `"90s"` or `"3600"` -> seconds; numbers pass through."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text and text[-1] in _DURATION_UNITS:
            try:
                return float(text[:-1]) * _DURATION_UNITS[text[-1]]
            except ValueError:
                return value
    return value


Duration = Annotated[float, NoDecode, BeforeValidator(parse_duration)]
"""A setting in seconds that also takes `7d`, `12h`, `30m` or `90s`."""


class WhisperSettings(BaseModel):
    """The faster-whisper model and how it runs (env prefix `WHISPER__`)."""

    model: str = Field(
        "tiny.en",
        min_length=1,
        description="Default model, used when a request names none or names `whisper-1`: `tiny.en` (embedded, "
        "offline), a size name (`small`), a Hugging Face repo id (`Systran/faster-whisper-small`) or a local directory.",
    )
    inference_device: InferenceDevice = Field(
        "auto", description="`auto` (CUDA when available, else CPU), `cpu` or `cuda`."
    )
    compute_type: str | None = Field(
        None,
        description="CTranslate2 compute type (`int8`, `int8_float16`, `float16`, `float32`, ...). Unset: `int8` on "
        "CPU, `float16` on CUDA.",
    )
    cpu_threads: int = Field(0, ge=0, le=256, description="CPU threads per model; 0 lets CTranslate2 choose (4, or OMP_NUM_THREADS).")
    num_workers: int = Field(
        1, ge=1, le=64, description="Batches the model decodes at once (the batch scheduler's workers; on a CPU each "
        "uses WHISPER__CPU_THREADS threads). Raise with MAX_CONCURRENCY on a big CPU or a GPU."
    )
    device_index: int = Field(0, ge=0, le=64, description="GPU index when the device is CUDA.")


class QuotaSettings(BaseModel):
    """Per-owner limits, for every owner whose key sets none of its own (env prefix `QUOTA__`); 0: no limit."""

    max_concurrent_requests: int = Field(
        0, ge=0, le=10_000,
        description="Synchronous transcriptions and translations (streamed ones too) and live sessions one owner may run "
        "at once; one more is answered 429 `rate_limit_exceeded` at once. Below MAX_CONCURRENCY, one owner at its "
        "limit leaves slots to the others.",
    )
    max_active_jobs: int = Field(
        0, ge=0, le=1_000_000,
        description="Jobs one owner may have queued or running; one more is answered 429 `rate_limit_exceeded`.",
    )
    audio_hours_per_day: float = Field(
        0, ge=0, le=1_000_000,
        description="Hours of audio one owner may have transcribed per UTC day (requests, jobs and live sessions "
        "together, counted when each ends); past it, 429 `insufficient_quota` until midnight UTC.",
    )


class ServiceSettings(BaseSettings):
    """Settings every service reads. Subclass it and add the service's own fields."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore", env_file=None, frozen=True)

    whisper: WhisperSettings = Field(default_factory=WhisperSettings, description="See `WHISPER__*`.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys. When set, every route except `/health*` needs "
        "`Authorization: Bearer <key>`. Each key is its own owner (`key-<first 12 hex digits of its SHA-256>`, role "
        "user): it sees only the jobs and sessions it made. Empty (and no API_KEYS_FILE): no authentication.",
        repr=False,
    )
    api_keys_file: Path | None = Field(
        None,
        description="A keys file of named, hashed keys with roles and quotas, kept with `python -m "
        "whisper_common.keys add|list|revoke`; changes apply within a second, without a restart (a file that does not "
        "parse is reported once and the last good keys stay). Used beside API_KEYS. Unset: none.",
        repr=False,
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or CIDRs of the proxy in front of the service (the auto-start proxy, "
        "an ingress controller). Only requests from these carry a trusted EDGE_USER_HEADER (the user Nginx "
        "authenticated); set, every request needs that header or an API key. Empty: the header is ignored.",
    )
    edge_user_header: str = Field(
        "X-Whisper-User",
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="The header in which the proxy in front names the user it authenticated (Nginx's `$remote_user`, "
        "always overwritten there); trusted only from TRUSTED_PROXIES.",
    )
    edge_admin_users: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated edge users (EDGE_USER_HEADER) with the admin role: they see and may delete every "
        "owner's data. Other edge users are role user.",
    )
    quota: QuotaSettings = Field(default_factory=QuotaSettings, description="See `QUOTA__*`.")
    usage_flush_seconds: float = Field(
        5, ge=0.1, le=3600,
        description="How often the per-owner usage counted in memory is added to the usage table (`GET /v1/usage`, "
        "daily quotas across processes). At most this much usage is lost when a process is killed.",
    )
    public_docs: bool = Field(
        False,
        description="With API_KEYS set, still serve `/docs` (Swagger UI), its assets and `/openapi.json` without a key, "
        "so a browser can open the page; they hold no data. The API routes keep needing a key.",
    )
    max_upload_mb: float = Field(500, gt=0, le=100_000, description="Largest request body accepted, in MiB (413 beyond).")
    body_read_timeout_seconds: float = Field(
        60,
        gt=0,
        le=3600,
        description="Close an upload that sends no bytes of its body for this long (408, connection closed). A slow "
        "upload that keeps sending is never cut: only silence counts. Nginx's `client_body_timeout` covers traffic "
        "through Nginx; this covers clients that reach the service directly or through the auto-start proxy.",
    )
    max_audio_seconds: float = Field(0, ge=0, description="Longest audio accepted, in seconds (400 beyond); 0 = no limit.")
    model_ttl_seconds: int = Field(
        300,
        ge=-1,
        description="Unload a model idle this long (seconds); never while a request uses it. -1: never unload; "
        "0: unload as soon as it is idle. Models in PRELOAD_MODELS stay loaded.",
    )
    preload_models: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Comma-separated models loaded at start and kept loaded (readiness waits for them). Unset: the "
        "default model. Empty string: none.",
    )
    max_concurrency: int = Field(2, ge=1, le=256, description="Inferences that run at the same time.")
    max_queue: int = Field(
        16, ge=0, le=10_000, description="Requests that may wait for an inference slot; beyond: 503 with Retry-After."
    )
    retry_after_seconds: int = Field(5, ge=1, le=3600, description="Retry-After sent with a 503 when full.")
    uvicorn_host: str = Field("0.0.0.0", description="Address to listen on.")
    uvicorn_port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level (JSON lines on stderr).")
    data_dir: Path = Field(
        Path("data"),
        description="Where the service keeps what must survive a restart: the jobs database (SQLite), stored job audio "
        "and results, realtime session transcripts. Relative paths are relative to the working directory; a volume in "
        "the containers (`/data`).",
    )
    jobs_database_url: str | None = Field(
        None,
        description="Where jobs are queued (and whisper-faster's live session transcripts kept). Unset: SQLite files in "
        "DATA_DIR (one host). `postgresql://user:pass@host/db`: a queue shared by several service processes or hosts "
        "(they must share DATA_DIR too, for uploaded audio); its schema is migrated at start.",
        repr=False,
    )
    jobs_workers: int = Field(
        1, ge=0, le=64, description="Job worker loops in this process; 0 accepts and serves jobs but runs none."
    )
    job_max_attempts: int = Field(
        3, ge=1, le=100, description="Runs a job gets when it fails for a transient reason (crash, model load, memory)."
    )
    job_lease_seconds: float = Field(
        60, ge=0.5, le=3600, description="A running job's lease; renewed while it runs, another worker takes the job "
        "over when it expires (the process died)."
    )
    job_retry_seconds: float = Field(
        10, ge=0, le=3600, description="Backoff before the second attempt of a job or a webhook; doubles each attempt."
    )
    transcript_search_window: int = Field(
        500, ge=20, le=1_000_000,
        description="A transcript search (`GET /v1/transcripts?q=`) ranks at most this many matching transcripts, the "
        "most recently indexed (the answer's `ranked_within` says when more matched); its latency grows with it (about 10 "
        "ms per 1,000 on PostgreSQL).",
    )
    job_retention: Duration = Field(
        7 * 86400, gt=0, description="How long a finished job, its audio and result are kept (`7d`, `12h`, `30m` or "
        "seconds); then they are removed."
    )
    webhook_secret: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated `whsec_` secrets signing job webhooks (Standard Webhooks); each signs, for "
        "rotation. Empty: webhooks are sent unsigned.",
        repr=False,
    )
    webhook_max_attempts: int = Field(8, ge=1, le=100, description="Attempts to deliver one webhook before giving up.")
    webhook_timeout_seconds: float = Field(10, gt=0, le=300, description="Deadline of one whole webhook delivery attempt.")
    webhook_concurrency: int = Field(
        8, ge=1, le=256,
        description="Webhook deliveries one process makes at once, at most one per receiver (scheme, host and port), so "
        "a slow receiver holds up only its own deliveries.",
    )
    allow_audio_urls: bool = Field(False, description="Accept `audio_url` (a URL the service downloads) on `POST /v1/jobs`.")
    audio_url_timeout_seconds: float = Field(
        600, gt=0, le=86400, description="Deadline of one whole `audio_url` download (redirects and body together); "
        "past it the attempt counts as a transient failure and is retried.",
    )
    outbound_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts or CIDRs that `audio_url` and `webhook_url` may reach although they resolve "
        "to loopback, private or link-local addresses (refused otherwise).",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        return split_comma_list(value)

    @field_validator("webhook_secret", "outbound_allowlist", "trusted_proxies", "edge_admin_users", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return split_comma_list(value)

    @field_validator("preload_models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        return split_comma_list(value)

    @property
    def authentication_configured(self) -> bool:
        """Callers must say who they are: keys (API_KEYS or a keys file) or a trusted proxy naming its users."""
        return bool(self.api_keys) or self.api_keys_file is not None or bool(self.trusted_proxies)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def models_to_preload(self) -> list[str]:
        return [self.whisper.model] if self.preload_models is None else list(self.preload_models)


def describe_settings(settings_class: type[BaseModel], prefix: str = "") -> list[dict[str, Any]]:
    """Rows for a configuration reference: `[{"env", "type", "default", "description"}]`, nested models expanded."""
    rows: list[dict[str, Any]] = []
    delimiter = "__"
    for name, field in settings_class.model_fields.items():
        env = f"{prefix}{name}".upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe_settings(annotation, prefix=f"{env}{delimiter}"))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append(
            {
                "env": env,
                "type": _type_name(annotation),
                "default": default,
                "description": field.description or "",
            }
        )
    return rows


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
