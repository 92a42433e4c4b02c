"""Fixtures shared by the HTTP-level tests of tests/serving/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from gates import Gate, gate_factory
from pgdb import pg_url

__all__ = ["pg_url"]  # a private PostgreSQL database per test

GUARD = 10.0  # seconds; a hang guard only


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=GUARD) as c:
        yield c


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Callable[[str], Gate]]:
    yield from gate_factory(tmp_path)
