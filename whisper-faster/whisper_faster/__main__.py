"""`python -m whisper_faster`: serve the app with uvicorn on UVICORN_HOST:UVICORN_PORT (default 0.0.0.0:8000)."""
from __future__ import annotations

from whisper_common.run import run_service
from whisper_faster.app import create_app
from whisper_faster.settings import Settings


def main() -> None:
    run_service(Settings(), create_app)


if __name__ == "__main__":
    main()
