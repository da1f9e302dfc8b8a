"""`autostart --config autostart/config.json [--listen 127.0.0.1:8890]` (also `python -m autostart`).

Signals: SIGTERM or SIGINT stop it (requests in flight get up to 25 s); SIGHUP reloads the config file.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from . import logs
from .app import Autostart
from .config import ConfigError, load_config, reference_markdown

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
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--config-reference", action="store_true",
                        help="print the reference of every config key (Markdown) and exit")
    return parser


class ReloadRequests:
    """SIGHUP: reload the config file. A SIGHUP that arrives while the proxy starts is remembered (its default
    action would end the process) and served once it listens."""

    def __init__(self) -> None:
        self.early = False
        signal.signal(signal.SIGHUP, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self.early = True

    def serve(self, app: Autostart, config_path: Path) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[bool]] = set()

        def reload() -> None:
            task = loop.create_task(app.reload_file(config_path), name="reload")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
        if self.early:
            reload()


async def serve(app: Autostart, host: str, port: int, config_path: Path, reloads: ReloadRequests) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.start(host, port)
    reloads.serve(app, config_path)
    await stop.wait()
    logging.getLogger("autostart").info("shutting down")
    await app.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.config_reference:
        print(reference_markdown(), end="")
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
    logs.configure(args.log_level)
    try:
        import uvloop  # the event loop is most of the proxy's cost per request
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    host, port = args.listen
    try:
        runner(serve(Autostart(config), host, port, args.config, reloads))
    except OSError as exc:
        print(f"autostart: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
