"""`serving pipeline deploy --flavor kubernetes` with no cluster to reach: one line that
names the kubeconfig (and the context), exit 1, nothing left registered. (No cluster
runs here; what it would apply is `render --flavor kubernetes`, tested in test_render.)"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from deploy_helpers import CLI_TIMEOUT, SERVING, SHOUT, Home, failure


def deploy(home: Home, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SERVING, "pipeline", "deploy", SHOUT, "--name", "kube", "--flavor", "kubernetes"],
        cwd=home.cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_nothing_registered(home: Home) -> None:
    assert home.registry.find_deployment("kube") is None


def test_no_kubeconfig_names_it(home: Home, tmp_path: Path) -> None:
    env = {k: v for k, v in home.env().items() if k not in ("KUBECONFIG", "SERVING_KUBE_CONTEXT")}
    env["HOME"] = str(tmp_path / "nobody")  # no ~/.kube/config there
    error = failure(deploy(home, env), 1)
    assert "no Kubernetes cluster is configured" in error
    assert "~/.kube/config" in error and "KUBECONFIG" in error
    assert_nothing_registered(home)


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {{server: "https://127.0.0.1:{port}"}}
users:
- name: me
  user: {{token: not-a-real-token}}
contexts:
- name: lab-admin
  context: {{cluster: lab, user: me, namespace: serving}}
- name: other
  context: {{cluster: lab, user: me}}
current-context: lab-admin
"""


def test_unreachable_cluster_names_the_context(home: Home, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    port = closed_port()
    kubeconfig.write_text(KUBECONFIG.format(port=port))
    env = {**home.env(), "KUBECONFIG": str(kubeconfig)}
    error = failure(deploy(home, env), 1)
    assert "no Kubernetes cluster is reachable" in error
    assert f"context 'lab-admin' of kubeconfig {kubeconfig}" in error and f"127.0.0.1:{port}" in error
    assert_nothing_registered(home)

    # SERVING_KUBE_CONTEXT picks another context; an unknown one is named.
    error = failure(deploy(home, {**env, "SERVING_KUBE_CONTEXT": "other"}), 1)
    assert "context 'other'" in error
    error = failure(deploy(home, {**env, "SERVING_KUBE_CONTEXT": "nope"}), 1)
    assert "nope" in error and "SERVING_KUBE_CONTEXT" in error
    assert_nothing_registered(home)
