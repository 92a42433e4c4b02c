"""Fixtures for the deployment tests: private homes whose daemons die at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_helpers import Home


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    """A fresh $SERVING_HOME for one test; every daemon it started is SIGKILLed after."""
    h = Home(tmp_path / "home", tmp_path / "work")
    try:
        yield h
    finally:
        h.kill_daemons()


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """Like `home`, shared by a module's tests (deploys take about a second each)."""
    base = tmp_path_factory.mktemp("deploy")
    h = Home(base / "home", base / "work")
    try:
        yield h
    finally:
        h.kill_daemons()
