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


class ServiceFailed(StartFailed):
    """The service itself reported that it cannot become ready (e.g. its model cannot be loaded); `message` is its
    reason. Restarting at once would fail the same way, so the state machine backs off before the next start."""


class StartBackoff(ServiceFailed):
    """A request arrived while the proxy waits out the back-off after a ServiceFailed; `retry_after` is the number of
    seconds until the next start may be tried."""

    def __init__(self, service: str, reason: str, retry_after: float) -> None:
        super().__init__(service, reason)
        self.retry_after = retry_after


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
