"""Domain errors of the proxy. Raised where they happen; turned into HTTP responses once, in proxy.py."""
from __future__ import annotations


class AutostartError(Exception):
    """Base class: every error here carries the service it concerns."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service
        self.message = message


class StartFailed(AutostartError):
    """The provider could not start the service, or it died before it became healthy."""


class StopFailed(AutostartError):
    """The provider could not stop the service."""


class StartTimeout(AutostartError):
    """The service was not healthy within startTimeout; `waited` is how long this request waited."""

    def __init__(self, service: str, waited: float, timeout: float) -> None:
        super().__init__(service, f"{service} was not ready within {timeout:g}s")
        self.waited = waited
        self.timeout = timeout


class TooManyWaiting(AutostartError):
    """maxWaiting requests already wait for this service's wake."""

    def __init__(self, service: str, limit: int) -> None:
        super().__init__(service, f"{limit} requests are already waiting for {service} to start")
        self.limit = limit


class ProviderUnavailable(StartFailed):
    """The provider's backend (e.g. the Docker Engine) cannot be reached at all."""
