"""An unknown flavor lists the flavors the `serving.deployers` entry points offer; a
rendered one points to `render`. (docker: test_deploy_docker; kubernetes:
test_deploy_kubernetes.)"""

from __future__ import annotations

from deploy_helpers import SHOUT, Home, failure


def test_unknown_flavor_lists_the_available_ones(home: Home) -> None:
    error = failure(home.cli("pipeline", "deploy", SHOUT, "--name", "odd", "--flavor", "nope"), 1)
    assert "unknown deployer flavor 'nope'" in error
    assert "docker" in error and "kubernetes" in error and "local" in error
    assert home.registry.find_deployment("odd") is None


def test_a_rendered_flavor_points_to_render(home: Home) -> None:
    error = failure(home.cli("pipeline", "deploy", SHOUT, "--name", "run", "--flavor", "gcp-cloud-run"), 1)
    assert "serving deployment render NAME --flavor gcp-cloud-run" in error
    assert home.registry.find_deployment("run") is None


def test_flavor_help_lists_the_choices(home: Home) -> None:
    out = " ".join(home.cli("pipeline", "deploy", "--help").stdout.split())
    assert "where it runs: one of docker, kubernetes, local (default: local)" in out
