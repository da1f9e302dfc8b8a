"""A real service server for tests: `python -m <module>` on a free port, ready when `/health/ready` answers 2xx.

Each service's conftest wraps `start_service` with its module, environment and start timeout."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from subprocess import Popen

import httpx

from tests.support import ARTIFACTS, free_port, python_module, require, server_process

JFK_REFERENCE = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@dataclass(frozen=True)
class Server:
    base_url: str
    process: Popen
    client_timeout: float = 120.0

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    def client(self, **kwargs: object) -> httpx.Client:
        options: dict[str, object] = {"timeout": self.client_timeout, **kwargs}
        return httpx.Client(base_url=self.base_url, **options)  # type: ignore[arg-type]


ServerFactory = Callable[..., AbstractContextManager[Server]]


def require_modules(modules: Mapping[str, str]) -> None:
    """`{"module": "what it is"}`: each must be importable (skip locally, fail under CI)."""
    for module, what in modules.items():
        require(importlib.util.find_spec(module) is not None, what)


@contextmanager
def start_service(
    module: str,
    log_name: str,
    env: Mapping[str, str],
    *,
    start_timeout: float = 120.0,
    client_timeout: float = 120.0,
) -> Iterator[Server]:
    """Serve on 127.0.0.1 with two CPU threads per model; `env` adds to (or overrides) that."""
    port = free_port()
    data_dir = ARTIFACTS / "data" / f"{log_name}-{port}"  # jobs and sessions of this server only; env may override
    full_env = {
        "UVICORN_HOST": "127.0.0.1", "UVICORN_PORT": str(port), "WHISPER__CPU_THREADS": "2", "DATA_DIR": str(data_dir),
        **env,
    }
    base_url = f"http://127.0.0.1:{port}"
    with server_process(
        python_module(module), health_url=f"{base_url}/health/ready", env=full_env, log_name=log_name,
        timeout=start_timeout,
    ) as process:
        yield Server(base_url, process, client_timeout)
