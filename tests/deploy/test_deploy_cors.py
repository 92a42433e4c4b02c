"""SERVING_CORS_ORIGINS='*' with a deployment whose auth key comes from the registry."""

from __future__ import annotations

import subprocess
import sys

from deploy_helpers import SHOUT, Home, ok


def test_a_wildcard_origin_is_refused_for_a_keyed_deployment(home: Home) -> None:
    ok(home.cli("pipeline", "deploy", SHOUT, "--name", "locked", "--generate-auth-key"))
    key = home.deployment("locked").auth_key
    assert key
    env = {**home.env(), "SERVING_DEPLOYMENT": "locked", "SERVING_CORS_ORIGINS": "*", "SERVING_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "serving"], env=env, capture_output=True, text=True, timeout=60, cwd=home.cwd
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "SERVING_CORS_ORIGINS='*' is not allowed with SERVING_AUTH_KEY" in lines[0]
    assert key not in done.stderr
