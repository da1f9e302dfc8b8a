"""The `docker` provider: the service is one or more containers, started and stopped through the Docker
Engine API (the docker SDK). The SDK is blocking, so every call runs in a worker thread, off the event loop.

Readiness: a container that defines a Docker HEALTHCHECK is ready when Docker says `healthy`; otherwise the
proxy probes the port and `healthPath` itself. A container that exits while starting fails the start at once,
with its exit code.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.containers import Container
from requests.exceptions import RequestException

from ..config import ServiceConfig
from ..errors import ProviderUnavailable, StartFailed, StopFailed
from .readiness import http_health

T = TypeVar("T")
COMPOSE_TIMEOUT = 300.0


class DockerProvider:
    def __init__(self, service: ServiceConfig, client_factory: Callable[[], docker.DockerClient] = docker.from_env) -> None:
        self.service = service
        self._client_factory = client_factory
        self._client: docker.DockerClient | None = None
        # Between start() and stop(): an exited container is then a failed start, not just a stopped service.
        self._starting = False
        self._progress: object = None

    # Every Engine call goes through here: in a thread, with the engine's errors turned into ours.
    async def _call(self, action: str, fn: Callable[[docker.DockerClient], T]) -> T:
        def run() -> T:
            if self._client is None:
                self._client = self._client_factory()
            return fn(self._client)

        try:
            return await asyncio.to_thread(run)
        except docker.errors.DockerException as exc:
            if isinstance(exc, docker.errors.APIError):
                raise
            self._client = None
            raise ProviderUnavailable(self.service.name, f"Docker Engine unreachable while {action}: {exc}") from exc
        except RequestException as exc:
            self._client = None
            raise ProviderUnavailable(self.service.name, f"Docker Engine unreachable while {action}: {exc}") from exc

    def _containers(self, client: docker.DockerClient) -> dict[str, Container | None]:
        found: dict[str, Container | None] = {}
        for name in self.service.containers:
            try:
                found[name] = client.containers.get(name)
            except docker.errors.NotFound:
                found[name] = None
        return found

    async def start(self) -> None:
        self._starting = True
        containers = await self._call("looking up containers", self._containers)
        missing = [name for name, container in containers.items() if container is None]
        if missing:
            if self.service.compose_dir is None:
                raise StartFailed(
                    self.service.name,
                    f"no such container: {', '.join(missing)} (create it, or set composeDir so the proxy can "
                    "run `docker compose up -d`)",
                )
            await self._compose_up()
            containers = await self._call("looking up containers", self._containers)
            still_missing = [name for name, container in containers.items() if container is None]
            if still_missing:
                raise StartFailed(
                    self.service.name,
                    f"`docker compose up -d` in {self.service.compose_dir} did not create: {', '.join(still_missing)}",
                )
        for name, container in containers.items():
            assert container is not None
            if container.status == "running":
                continue
            try:
                await self._call(f"starting {name}", lambda _client, c=container: c.start())
            except docker.errors.APIError as exc:
                raise StartFailed(self.service.name, f"docker could not start {name}: {exc.explanation or exc}") from exc

    async def _compose_up(self) -> None:
        command = await asyncio.to_thread(_compose_command)
        if command is None:
            raise StartFailed(self.service.name, "neither `docker compose` nor `docker-compose` is installed")
        directory = self.service.compose_dir
        if directory is None or not directory.is_dir():
            raise StartFailed(self.service.name, f"composeDir {directory} is not a folder")
        process = await asyncio.create_subprocess_exec(
            *command, "up", "-d", cwd=directory, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), COMPOSE_TIMEOUT)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise StartFailed(self.service.name, f"`{' '.join(command)} up -d` took longer than {COMPOSE_TIMEOUT:g}s")
        if process.returncode != 0:
            tail = output.decode(errors="replace").strip().splitlines()[-5:]
            raise StartFailed(
                self.service.name,
                f"`{' '.join(command)} up -d` in {directory} exited with {process.returncode}: {' | '.join(tail)}",
            )

    def _inspect(self, client: docker.DockerClient) -> list[dict[str, Any]]:
        states = []
        for name in self.service.containers:
            try:
                attrs = client.api.inspect_container(name)
            except docker.errors.NotFound:
                states.append({"Name": name, "Missing": True})
                continue
            states.append({"Name": name, **attrs["State"]})
        return states

    async def is_running(self) -> bool:
        states = await self._call("inspecting containers", self._inspect)
        return all(state.get("Running") and not state.get("Paused") for state in states)

    async def is_ready(self) -> bool:
        states = await self._call("inspecting containers", self._inspect)
        probe_http = False
        for state in states:
            name = state["Name"]
            if state.get("Missing"):
                raise StartFailed(self.service.name, f"container {name} disappeared while starting")
            if state.get("Status") in ("exited", "dead") and self._starting:
                raise StartFailed(
                    self.service.name,
                    f"container {name} exited with code {state.get('ExitCode')} before it became healthy"
                    + (f": {state['Error']}" if state.get("Error") else ""),
                )
            if not state.get("Running"):
                return False
            health = state.get("Health")
            if self.service.readiness == "http" or (health is None and self.service.readiness == "auto"):
                probe_http = True
            elif health is None:
                raise StartFailed(self.service.name, f"readiness is 'docker' but container {name} has no HEALTHCHECK")
            elif health.get("Status") != "healthy":
                return False
        if probe_http:
            health = await http_health(self.service.upstream_host, self.service.proxy_port, self.service.health_path)
            self._progress = health.progress
            health.raise_if_failed(self.service.name)
            return health.ready
        return True

    async def start_progress(self) -> object:
        return self._progress

    async def interrupted(self) -> bool:
        # Docker cannot tell who stopped a container, only that it ran and exited (an idle stop by the proxy looks the
        # same): a container that was only created (`make up`) never ran and holds nothing to resume.
        states = await self._call("inspecting containers", self._inspect)
        if any(state.get("Missing") for state in states):
            return False
        return any(state.get("Status") in ("exited", "dead") for state in states)

    async def stop(self) -> None:
        self._starting = False
        self._progress = None
        timeout = max(int(round(self.service.stop_timeout)), 0)

        def stop_all(client: docker.DockerClient) -> None:
            for name in self.service.containers:
                try:
                    client.api.stop(name, timeout=timeout)
                except docker.errors.NotFound:
                    continue

        try:
            await self._call("stopping containers", stop_all)
        except docker.errors.APIError as exc:
            raise StopFailed(self.service.name, f"docker could not stop: {exc.explanation or exc}") from exc
        except ProviderUnavailable as exc:
            raise StopFailed(self.service.name, exc.message) from exc

    async def close(self) -> None:
        """Containers outlive the proxy on purpose: a restarted proxy adopts them."""
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)


def _compose_command() -> list[str] | None:
    docker_cli = shutil.which("docker")
    if docker_cli is not None:
        probe = subprocess.run([docker_cli, "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return [docker_cli, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None
