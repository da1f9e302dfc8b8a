import pytest

from tests.support import FIXTURES


def pytest_report_header(config: pytest.Config) -> str:
    return f"audio fixtures: {FIXTURES}"
