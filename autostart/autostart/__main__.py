"""`autostart --config autostart/config.json [--listen 127.0.0.1:8890]` (also `python -m autostart`).

Signals: SIGTERM or SIGINT stop it (requests in flight get up to 25 s); SIGHUP reloads the config file; SIGUSR2
starts a new proxy from the code on disk that takes over the listening socket (handover.py) before this one stops.
The socket is systemd's when it passes one (socket activation), else the one a predecessor handed over, else bound
here (listeners.py).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from . import handover, logs
from .app import Autostart
from .config import ConfigError, load_config, reference_markdown
from .identity import code_fingerprint, file_digest
from .listeners import Inherited, ListenerError, inherited

DEFAULT_LISTEN = "127.0.0.1:8890"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autostart", description="Reverse proxy that starts stopped services on demand and stops idle ones."
    )
    parser.add_argument("--config", type=Path, default=Path("autostart/config.json"),
                        help="JSON config file (default: %(default)s)")
    parser.add_argument("--listen", type=parse_listen, default=parse_listen(DEFAULT_LISTEN),
                        help=f"address to listen on, HOST:PORT (default: {DEFAULT_LISTEN})")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-file", type=Path, default=None,
                        help="write the JSON log lines to this file, rotated by size, instead of stderr (unset: stderr)")
    parser.add_argument("--log-max-bytes", type=int, default=10 * 2**20,
                        help="size in bytes at which --log-file is rotated")
    parser.add_argument("--log-backups", type=int, default=5,
                        help="rotated files of --log-file that are kept")
    parser.add_argument("--pid-file", type=Path, default=None,
                        help="write this process's pid here once it listens, removed when it exits (unset: none)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--fingerprint", action="store_true",
                        help="print the fingerprint of the code on disk (what /_autostart/health reports as `code`) "
                        "and exit")
    parser.add_argument("--config-reference", action="store_true",
                        help="print the reference of every config key (Markdown) and exit")
    return parser


class ReloadRequests:
    """SIGHUP: reload the config file; SIGUSR2: hand over to a new proxy. One that arrives while the proxy starts is
    remembered (the default action of both would end the process) and served once it listens."""

    def __init__(self) -> None:
        self.early: set[int] = set()
        for sig in (signal.SIGHUP, signal.SIGUSR2):
            signal.signal(sig, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self.early.add(signum)

    def serve(self, app: Autostart, config_path: Path, successors: handover.Successors) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[bool]] = set()

        def reload() -> None:
            task = loop.create_task(app.reload_file(config_path), name="reload")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
        loop.add_signal_handler(signal.SIGUSR2, successors.start)
        if signal.SIGHUP in self.early:
            reload()
        if signal.SIGUSR2 in self.early:
            successors.start()


class PidFile:
    """The pid file of the background process: written once it listens, removed at exit unless a successor has
    written its own pid there meanwhile."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self) -> None:
        if self.path is not None:
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temporary.write_text(f"{os.getpid()}\n")
            temporary.replace(self.path)

    def remove(self) -> None:
        if self.path is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if int(self.path.read_text().strip()) == os.getpid():
                self.path.unlink()


async def serve(app: Autostart, host: str, port: int, config_path: Path, reloads: ReloadRequests,
                listener: Inherited | None, pid_file: PidFile) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log = logging.getLogger("autostart")
    replaces = handover.predecessor()
    if listener is not None:
        log.info("listening on an inherited socket", extra={"origin": listener.origin, "address": listener.address(),
                                                           "predecessor": replaces})
        if listener.address()[1] != port:
            log.warning("--listen differs from the inherited socket's address; the socket is used",
                        extra={"listen": f"{host}:{port}", "address": listener.address()})
    await app.start(host, port, sock=listener.socket if listener else None, resume=replaces is None)
    app.about["listener"] = listener.origin if listener else "bound"
    pid_file.write()
    if replaces is not None:
        handover.retire(replaces)
    successors = handover.Successors(app.listening_fd())
    reloads.serve(app, config_path, successors)
    try:
        await stop.wait()
        successors.handed_over = True
        log.info("shutting down")
        await app.stop()
    finally:
        successors.close()
        pid_file.remove()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.config_reference:
        print(reference_markdown(), end="")
        return 0
    if args.fingerprint:
        print(code_fingerprint())
        return 0
    reloads = ReloadRequests()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"autostart: invalid config: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"{args.config}: OK ({len(config.services)} services)")
        return 0
    try:
        listener = inherited()
    except ListenerError as exc:
        print(f"autostart: {exc}", file=sys.stderr)
        return 1
    logs.configure(args.log_level, args.log_file, args.log_max_bytes, args.log_backups)
    try:
        import uvloop  # the event loop is most of the proxy's cost per request
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    host, port = args.listen
    app = Autostart(config)
    app.about.update({"pid": os.getpid(), "code": code_fingerprint(), "config": file_digest(args.config)})
    try:
        runner(serve(app, host, port, args.config, reloads, listener, PidFile(args.pid_file)))
    except OSError as exc:
        print(f"autostart: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        logging.getLogger("autostart").error("cannot listen", extra={"address": f"{host}:{port}",
                                                                     "reason": exc.strerror or str(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
