"""Shared by every test file: the project root, and the `slow` marker.

`slow` marks the tests that run the pipeline end to end or start processes (torchrun, dvc):
`pytest -m "not slow"` is the quick edit loop; `make test` (and CI) runs everything.
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end pipeline runs and multi-process tests (deselect with -m 'not slow')")
