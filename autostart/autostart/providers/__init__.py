"""Providers by the name used in the config's `provider` key. Imported lazily: the docker SDK is only
needed when a service uses it."""
from __future__ import annotations

from ..config import ServiceConfig
from .base import Provider


def create_provider(service: ServiceConfig) -> Provider:
    if service.provider == "docker":
        from .docker import DockerProvider

        return DockerProvider(service)
    if service.provider == "command":
        from .command import CommandProvider

        return CommandProvider(service)
    raise ValueError(f"unknown provider {service.provider!r}")
