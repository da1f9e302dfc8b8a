"""`make run`: the platform on this machine — Nginx (TLS, basic auth) → auto-start proxy → services on demand.

Environment (all optional): RUN_DIR, RUN_DOMAIN, RUN_HTTPS_PORT, RUN_HTTP_PORT, RUN_PROXY_PORT,
RUN_WHISPER_FASTER_PORT, RUN_WHISPERX_PORT, RUN_IDLE_TIMEOUT, RUN_START_TIMEOUT, RUN_MAX_BODY_SIZE,
RUN_CORS_ORIGINS, WHISPER_USER, WHISPER_PASSWORD (see scripts/stack/settings.py).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from pydantic import ValidationError
from stack.credentials import CredentialsError
from stack.local_stack import LocalStack, StackError
from stack.nginx_config import NginxConfigError
from stack.nginx_process import NginxError
from stack.settings import RunSettings
from stack.tls import CertificateError

SETUP_ERRORS = (
    StackError,
    NginxError,
    NginxConfigError,
    CertificateError,
    CredentialsError,
    TimeoutError,
    RuntimeError,
)


def main() -> int:
    try:
        settings = RunSettings()
    except ValidationError as exc:
        print(f"make run: invalid environment:\n{exc}", file=sys.stderr)
        return 2
    stack = LocalStack(settings)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop_requested.set()

    # Installed before anything starts, so a Ctrl-C during start-up still stops what has started.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    try:
        stack.prepare()
        stack.start()
        print(stack.banner(), flush=True)
        while not stop_requested.wait(1.0):
            failed = stack.failed_child()
            if failed is not None:
                print(f"make run: {failed.name} exited ({failed.process.returncode}); its log:", file=sys.stderr)
                print(failed.log_tail(), file=sys.stderr)
                exit_code = 1
                break
    except SETUP_ERRORS as exc:
        print(f"make run: {exc}", file=sys.stderr)
        exit_code = 1
    finally:
        print("\nstopping: nginx, then the proxy and the services it started…", flush=True)
        problems = stack.stop()
        for problem in problems:
            print(f"make run: {problem}", file=sys.stderr)
        if not problems:
            print("stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
