"""The provider interface: how a service is started, stopped and looked at. The proxy knows nothing else.

A new kind of backend (Kubernetes, systemd) is one new module implementing this Protocol plus one entry in
providers/__init__.py; the proxy and the state machine do not change.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Provider(Protocol):
    async def start(self) -> None:
        """Begin starting the service (idempotent when it already runs). Raises StartFailed with the reason."""

    async def stop(self) -> None:
        """Stop the service and return once it has stopped. Raises StopFailed."""

    async def is_running(self) -> bool:
        """Whether the service's process/containers are up (not necessarily ready to serve)."""

    async def is_ready(self) -> bool:
        """Whether it serves requests now. Raises StartFailed when it cannot become ready any more
        (the process exited, the container died), so a start fails fast instead of timing out."""

    async def start_progress(self) -> object:
        """What the service said about its start at the last readiness probe (the `progress` of its not-ready
        answer, e.g. bytes of a model download so far), or None when it said nothing. The state machine keeps
        waiting past startTimeout while this changes."""

    async def interrupted(self) -> bool:
        """Whether the stopped service ran before and was stopped while no proxy looked after it, so that it may have
        work left to resume (its containers exited: a reboot, a crash, `docker stop`); False when it never ran (just
        created) or its processes cannot outlive the proxy. Raises when the backend cannot be asked yet."""

    async def close(self) -> None:
        """Release what the provider holds (clients, child processes it owns) when the proxy exits."""
