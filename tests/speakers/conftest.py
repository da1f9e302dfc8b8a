"""Voiceprint library tests: the store on SQLite and on a real PostgreSQL (tests/jobs/postgres.py)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.jobs.postgres import postgres_server


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url
