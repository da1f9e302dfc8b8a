"""A real PostgreSQL server for the module (tests/jobs/postgres.py) and a fresh database in it per test."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tests.jobs.postgres import postgres_server


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture()
def new_database(postgres_url: str) -> Callable[[], str]:
    """Makes an empty database on the module's server; returns its URL."""

    def make() -> str:
        name = f"t{time.monotonic_ns()}"
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return postgres_url.rsplit("/", 1)[0] + f"/{name}"

    return make
