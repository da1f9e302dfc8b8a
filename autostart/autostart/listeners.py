"""Where the proxy's listening socket comes from, so that a restart never refuses a connection:

- systemd's socket activation (`docker-autostart.socket`): systemd holds the socket across restarts of the service
  and passes it as fd 3 (`LISTEN_FDS=1`, `LISTEN_PID` = this process), the protocol of sd_listen_fds(3);
- the proxy this one replaces (a hand-over, handover.py): the same socket, inherited at `AUTOSTART_LISTEN_FD`;
- otherwise the proxy binds `--listen` itself.

An inherited socket is used as it is (its address is the one systemd or the predecessor bound; `--listen` is then
only reported if it differs). The variables are removed from the environment once read, so that nothing the proxy
starts (a `command` service) takes them for its own.
"""
from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass

SD_LISTEN_FDS_START = 3
# The environment variables, by their own names.
LISTEN_PID = "LISTEN_PID"
LISTEN_FDS = "LISTEN_FDS"
LISTEN_FDNAMES = "LISTEN_FDNAMES"
AUTOSTART_LISTEN_FD = "AUTOSTART_LISTEN_FD"
HANDOVER_FD = AUTOSTART_LISTEN_FD


class ListenerError(Exception):
    """The inherited socket cannot be used (one line for the operator)."""


@dataclass(frozen=True)
class Inherited:
    socket: socket.socket
    origin: str  # "systemd" or "handover"

    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)


def inherited(environ: MutableMapping[str, str] | None = None) -> Inherited | None:
    """The listening socket passed to this process, or None when it must bind one itself."""
    env = os.environ if environ is None else environ
    fd: int | None = None
    origin = ""
    if env.get(LISTEN_PID) == str(os.getpid()) and env.get(LISTEN_FDS):
        count = env.get(LISTEN_FDS, "")
        if count != "1":
            raise ListenerError(f"systemd passed LISTEN_FDS={count[:10]}: the socket unit must have exactly one "
                                "ListenStream")
        fd, origin = SD_LISTEN_FDS_START, "systemd"
    elif env.get(HANDOVER_FD):
        raw = env[HANDOVER_FD]
        if not raw.isdigit():
            raise ListenerError(f"{HANDOVER_FD}={raw[:20]!r} is not a file descriptor")
        fd, origin = int(raw), "handover"
    for name in (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, HANDOVER_FD):
        env.pop(name, None)
    if fd is None:
        return None
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenerError(f"the {origin} socket (fd {fd}) cannot be used: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ListenerError(f"fd {fd} from {origin} is not a listening TCP socket")
    sock.set_inheritable(False)  # a `command` child must not hold the proxy's socket open
    sock.setblocking(False)
    return Inherited(sock, origin)
