"""Settings of `make run` (scripts/run_local.py): environment variables RUN_* plus WHISPER_USER/WHISPER_PASSWORD."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]
Port = Annotated[int, Field(ge=1, le=65535)]


class RunSettings(BaseSettings):
    """Environment of `make run`. Every port can be moved when the default one is taken."""

    model_config = SettingsConfigDict(env_prefix="RUN_", extra="ignore", frozen=True)

    dir: Path = Field(ROOT / ".run", description="Where the certificate, credentials, configs and logs are kept.")
    domain: str = Field("localhost", description="Sites are whisper.<domain> and whisperx.<domain>.")
    https_port: Port = Field(8443, description="Nginx HTTPS port (loopback).")
    http_port: Port = Field(8080, description="Nginx HTTP port, redirecting to HTTPS (loopback).")
    proxy_port: Port = Field(8890, description="Auto-start proxy port (loopback).")
    whisper_faster_port: Port = Field(8001, description="whisper-faster's port while it runs (loopback).")
    whisperx_port: Port = Field(8002, description="whisperx's port while it runs (loopback).")
    idle_timeout: float = Field(900, ge=0, description="Seconds without requests before a service is stopped.")
    start_timeout: float = Field(300, gt=0, description="Seconds a service may take to start (model loading).")
    max_body_size: str = Field("500M", description="Largest upload Nginx accepts (nginx size: 500M, 1G).")
    rate_limit: int = Field(
        10, ge=0, le=100_000,
        description="Requests per second one client address may make through Nginx, sustained (0 = no limit); "
        "more get 429 with Retry-After before the password is checked.",
    )
    rate_limit_burst: int = Field(
        60, ge=0, le=100_000, description="Requests one address may make at once above RUN_RATE_LIMIT."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated browser origins allowed by CORS (a Swagger portal)."
    )
    user: str | None = Field(
        None, validation_alias=AliasChoices("WHISPER_USER"), description="Basic-auth user (default: whisper)."
    )
    password: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("WHISPER_PASSWORD"),
        description="Basic-auth password; without it one is generated once and kept in <dir>/credentials (0600).",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def whisper_host(self) -> str:
        return f"whisper.{self.domain}"

    @property
    def whisperx_host(self) -> str:
        return f"whisperx.{self.domain}"

    def ports(self) -> dict[str, int]:
        return {
            "RUN_HTTPS_PORT": self.https_port,
            "RUN_HTTP_PORT": self.http_port,
            "RUN_PROXY_PORT": self.proxy_port,
            "RUN_WHISPER_FASTER_PORT": self.whisper_faster_port,
            "RUN_WHISPERX_PORT": self.whisperx_port,
        }
