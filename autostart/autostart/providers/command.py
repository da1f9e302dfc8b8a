"""The `command` provider: the service is a child process of the proxy (`startCommand`), in its own
process group so that stopping it also stops whatever it spawned (uvicorn workers, a shell's children)."""
from __future__ import annotations

import asyncio
import os
import signal

from ..config import ServiceConfig
from ..errors import StartFailed, StopFailed
from .readiness import http_health, port_open


class CommandProvider:
    def __init__(self, service: ServiceConfig) -> None:
        assert service.start_command, "validated by ServiceConfig"
        self.service = service
        self._process: asyncio.subprocess.Process | None = None
        self._starting = False  # between start() and stop(): an exit is then a failed start
        self._progress: object = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._own_child_alive() else None

    def _own_child_alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        self._starting = True
        if self._own_child_alive() or await port_open(self.service.upstream_host, self.service.proxy_port):
            return  # ours, or started by someone else: it is adopted as it is
        argv = self.service.start_command or []
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.service.cwd,
                env={**os.environ, **self.service.env},
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise StartFailed(
                self.service.name, f"cannot run startCommand {argv[0]!r}: {exc.strerror or exc}"
            ) from exc

    async def is_running(self) -> bool:
        if self._own_child_alive():
            return True
        return await port_open(self.service.upstream_host, self.service.proxy_port)

    async def is_ready(self) -> bool:
        health = await http_health(self.service.upstream_host, self.service.proxy_port, self.service.health_path)
        self._progress = health.progress
        if health.ready:
            return True
        health.raise_if_failed(self.service.name)
        if self._starting and self._process is not None and self._process.returncode is not None:
            raise StartFailed(
                self.service.name,
                f"startCommand exited with code {self._process.returncode} before it became healthy",
            )
        return False

    async def start_progress(self) -> object:
        return self._progress

    async def interrupted(self) -> bool:
        return False  # a child never outlives the proxy that started it: nothing of its own to resume

    async def stop(self) -> None:
        self._starting = False
        self._progress = None
        if self.service.stop_command:
            await self._run_stop_command(self.service.stop_command)
            if self._process is not None and await self._exited_within(self._process, self.service.stop_timeout):
                self._signal_group(self._process, signal.SIGKILL)  # what it left behind in its group
                self._process = None
                return
        if self._own_child_alive():
            await self._terminate(self._process)  # type: ignore[arg-type]
            self._process = None  # its group is gone too: never signal that id again (it may be reused)
            return
        if self._process is not None:
            # The leader exited (a failed start): whatever it left in its process group goes too.
            self._signal_group(self._process, signal.SIGKILL)
            self._process = None
        if not self.service.stop_command and await self.is_running():
            raise StopFailed(self.service.name, "it was not started by the proxy and has no stopCommand")

    async def _run_stop_command(self, argv: list[str]) -> None:
        try:
            stopper = await asyncio.create_subprocess_exec(
                *argv, cwd=self.service.cwd, env={**os.environ, **self.service.env}, stdin=asyncio.subprocess.DEVNULL
            )
        except OSError as exc:
            raise StopFailed(self.service.name, f"cannot run stopCommand {argv[0]!r}: {exc.strerror or exc}") from exc
        if not await self._exited_within(stopper, self.service.stop_timeout):
            stopper.kill()
            await stopper.wait()
            raise StopFailed(self.service.name, f"stopCommand did not finish within {self.service.stop_timeout:g}s")
        if stopper.returncode != 0:
            raise StopFailed(self.service.name, f"stopCommand exited with code {stopper.returncode}")

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        self._signal_group(process, signal.SIGTERM)
        if not await self._exited_within(process, self.service.stop_timeout):
            self._signal_group(process, signal.SIGKILL)
            await process.wait()
        # Whatever else the group still holds (workers that ignored SIGTERM) goes too.
        self._signal_group(process, signal.SIGKILL)

    @staticmethod
    def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    async def _exited_within(process: asyncio.subprocess.Process, seconds: float) -> bool:
        try:
            await asyncio.wait_for(process.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Children do not outlive the proxy: a restarted proxy would not know their pid."""
        if self._own_child_alive():
            await self._terminate(self._process)  # type: ignore[arg-type]
