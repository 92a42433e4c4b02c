"""Deployers: how a snapshot becomes a running service. Flavors are found by name in
the `serving.deployers` entry-point group (pyproject.toml)."""

from serving.deploy.deployers.base import (
    Deployer,
    DeployError,
    available_flavors,
    get_deployer,
    register_flavor,
)
from serving.deploy.deployers.local import LocalDeployer

__all__ = ["DeployError", "Deployer", "LocalDeployer", "available_flavors", "get_deployer", "register_flavor"]
