"""Runs nginx in the foreground from a rendered, self-contained configuration (no root, no /etc/nginx)."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .nginx_config import nginx_binary
from .processes import Child, start_child, wait_until


class NginxError(RuntimeError):
    """nginx refused the configuration or did not come up."""


def nginx_args(conf: Path, run_dir: Path, *extra: str) -> list[str]:
    binary = nginx_binary()
    if binary is None:
        raise NginxError("nginx is not installed (apt-get install nginx, or `make system-deps-runtime`)")
    error_log = run_dir / "logs" / "nginx-error.log"
    return [binary, "-p", f"{run_dir}/", "-c", str(conf), "-e", str(error_log), *extra]


def check_config(conf: Path, run_dir: Path) -> str:
    """`nginx -t` on the rendered config; returns its report, raises with it when the config is refused."""
    result = subprocess.run(nginx_args(conf, run_dir, "-t"), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NginxError(f"nginx -t refused {conf}:\n{result.stderr.strip()}")
    return result.stderr.strip()


def start_nginx(conf: Path, run_dir: Path, ports: Sequence[int], host: str = "127.0.0.1") -> Child:
    check_config(conf, run_dir)
    child = start_child("nginx", nginx_args(conf, run_dir, "-g", "daemon off;"), run_dir / "logs" / "nginx.out")
    try:
        wait_until(lambda: all(_listening(host, port) for port in ports), 15, "nginx", child)
    except (RuntimeError, TimeoutError) as exc:
        child.stop()
        error_log = run_dir / "logs" / "nginx-error.log"
        tail = error_log.read_text(errors="replace")[-2000:] if error_log.exists() else ""
        raise NginxError(f"{exc}\n{tail}") from exc
    return child


def stop_nginx(child: Child) -> None:
    # SIGQUIT: graceful shutdown, workers finish the requests in flight.
    child.stop(signal.SIGQUIT, grace_s=15)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
