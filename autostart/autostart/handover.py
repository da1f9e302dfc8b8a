"""Replacing a running proxy by a new one (new code) without refusing a connection, where no systemd holds the
socket (the background process of `make up`): Nginx's binary upgrade, for this proxy.

1. `make up` sends SIGUSR2 to the running proxy.
2. It starts its successor: the same command line (`sys.orig_argv`, so the code on disk now), with the listening
   socket inherited (`AUTOSTART_LISTEN_FD`) and its own pid in `AUTOSTART_PREDECESSOR`.
3. The successor adopts the running services, accepts on the same socket (both accept for a moment: the kernel hands
   each connection to one of them, none is refused), writes the pid file, then sends the predecessor SIGTERM.
4. The predecessor stops accepting (the socket stays open in the successor), lets its requests in flight finish, exits.

A successor that fails before step 3 (a broken install) only logs and exits: the predecessor never got SIGTERM and
keeps serving, and says so in its log. The successor skips the resume of interrupted services (lifecycle.plan_resume):
its predecessor was looking after them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import MutableMapping

from .listeners import HANDOVER_FD

AUTOSTART_PREDECESSOR = "AUTOSTART_PREDECESSOR"
PREDECESSOR = AUTOSTART_PREDECESSOR

log = logging.getLogger("autostart")


def predecessor(environ: MutableMapping[str, str] | None = None) -> int | None:
    """The pid of the proxy this one replaces (removed from the environment), or None on a fresh start."""
    env = os.environ if environ is None else environ
    raw = env.pop(PREDECESSOR, "")
    return int(raw) if raw.isdigit() else None


def retire(pid: int) -> None:
    """Tell the predecessor that this process serves now: it stops accepting and drains (its SIGTERM)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        log.warning("the proxy this one replaces has already exited", extra={"predecessor": pid})
    else:
        log.info("took over from the previous proxy", extra={"predecessor": pid})


class Successors:
    """The predecessor's side: starts one successor at a time and reports one that exits before taking over."""

    def __init__(self, listener_fd: int) -> None:
        self.listener_fd = listener_fd
        self.running: asyncio.subprocess.Process | None = None
        self.handed_over = False  # set when SIGTERM arrives: the successor took over (or someone stops us)
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.running is not None and self.running.returncode is None:
            log.warning("hand-over already under way", extra={"successor": self.running.pid})
            return
        self._watch = asyncio.get_running_loop().create_task(self._run(), name="hand-over")

    async def _run(self) -> None:
        fd = self.listener_fd
        argv = [sys.executable, *sys.orig_argv[1:]]
        env = {**os.environ, HANDOVER_FD: str(fd), PREDECESSOR: str(os.getpid())}
        try:
            self.running = await asyncio.create_subprocess_exec(
                *argv, env=env, pass_fds=(fd,), stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        except Exception as exc:
            log.error("hand-over failed: the new proxy could not be started; this one keeps serving",
                      extra={"reason": f"{type(exc).__name__}: {exc}"})
            return
        log.info("hand-over: new proxy started", extra={"successor": self.running.pid})
        code = await self.running.wait()
        if not self.handed_over:
            log.error("hand-over failed: the new proxy exited before it took over; this one keeps serving",
                      extra={"successor": self.running.pid, "exitCode": code})

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
