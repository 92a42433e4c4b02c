"""Flavors other than `local` cannot run here: they say so and never fake success."""

from __future__ import annotations

import pytest
from deploy_helpers import SHOUT, Home, failure


@pytest.mark.parametrize("flavor", ["kubernetes"])
def test_unavailable_flavor_refuses(home: Home, flavor: str) -> None:
    result = home.cli("pipeline", "deploy", SHOUT, "--name", f"on-{flavor}", "--flavor", flavor)
    error = failure(result, 1)  # nothing on stdout: no "RUNNING", no URL
    assert error.startswith(f"serving: error: the '{flavor}' deployer cannot run here: ")
    dep = home.registry.find_deployment(f"on-{flavor}")
    assert dep is None or (dep.status != "RUNNING" and not dep.flavor_data.get("pid") and not dep.url)


def test_unknown_flavor_lists_the_available_ones(home: Home) -> None:
    error = failure(home.cli("pipeline", "deploy", SHOUT, "--name", "odd", "--flavor", "nope"), 1)
    assert "unknown deployer flavor 'nope'" in error
    assert "docker" in error and "kubernetes" in error and "local" in error
    assert home.registry.find_deployment("odd") is None
