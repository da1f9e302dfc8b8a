"""Child processes that `make backup` and `make restore` exchange tar streams with (a helper container, the root-side
host-files helper): one sends a stream on its stdout (`Producer`), the other takes one on its stdin (`Consumer`). A child
that fails says why on stderr in one line; that line becomes the `BackupError`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from typing import IO

from whisper_common.backup.errors import BackupError

from .settings import ROOT


def as_root(module: str, *args: str) -> list[str]:
    """A `stack.*` module run as root (with sudo when this is not root), as `make up` runs its root steps."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    return [*sudo, "env", f"PYTHONPATH={ROOT / 'scripts'}", sys.executable, "-m", module, *args]


class _Child:
    def __init__(self, command: list[str], stdin: int | None, on_failure: Callable[[], None]) -> None:
        self.process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._on_failure = on_failure
        self._output: dict[str, bytes] = {}
        self._readers = [
            threading.Thread(target=self._drain, args=(name, pipe), daemon=True)
            for name, pipe in (("stderr", self.process.stderr),) + self._drained_stdout()
        ]
        for reader in self._readers:
            reader.start()

    def _drained_stdout(self) -> tuple[tuple[str, IO[bytes] | None], ...]:
        return ()

    def _drain(self, name: str, pipe: IO[bytes]) -> None:
        self._output[name] = pipe.read()

    def finish(self) -> str:
        """Waits for the end; returns its stdout when read here, or raises with the last line of its stderr."""
        code = self.process.wait()
        for reader in self._readers:
            reader.join()
        errors = self._output.get("stderr", b"").decode(errors="replace").strip()
        if code != 0:
            raise BackupError(errors.splitlines()[-1] if errors else f"exited with status {code}")
        return self._output.get("stdout", b"").decode(errors="replace")

    def warnings(self) -> list[str]:
        text = self._output.get("stderr", b"").decode(errors="replace")
        return [line for line in text.splitlines() if line.startswith("warning:")]

    def settle(self, seconds: float = 30) -> None:
        """Gives a child that stopped early the time to exit with its message; kills it after that."""
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._on_failure()


class Producer(_Child):
    """A child whose stdout is a tar stream."""

    def __init__(self, command: list[str], on_failure: Callable[[], None] = lambda: None) -> None:
        super().__init__(command, subprocess.DEVNULL, on_failure)

    @property
    def stdout(self) -> IO[bytes]:
        return self.process.stdout  # type: ignore[return-value]


class Consumer(_Child):
    """A child that reads a tar stream on its stdin: the first member, then what `add` gives."""

    def __init__(self, command: list[str], first: tuple[str, bytes],
                 on_failure: Callable[[], None] = lambda: None) -> None:
        super().__init__(command, subprocess.PIPE, on_failure)
        self._tar = tarfile.open(fileobj=self.process.stdin, mode="w|", format=tarfile.PAX_FORMAT)
        self.add(first[0], io.BytesIO(first[1]), len(first[1]))

    def _drained_stdout(self) -> tuple[tuple[str, IO[bytes] | None], ...]:
        return (("stdout", self.process.stdout),)

    def add(self, name: str, handle: IO[bytes], size: int, mode: int = 0o600, mtime: float | None = None) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode, int(mtime if mtime is not None else time.time())
        try:
            self._tar.addfile(info, handle)
        except BrokenPipeError:
            raise self._refusal() from None

    def close(self) -> str:
        try:
            self._tar.close()
            self.process.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            raise self._refusal() from None
        return self.finish()

    def _refusal(self) -> BackupError:
        """The child stopped reading: it refused, and its stderr says why."""
        self.settle()
        try:
            self.finish()
        except BackupError as exc:
            return exc
        return BackupError("the helper stopped reading the stream")
