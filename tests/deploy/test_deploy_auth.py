"""Deployments that require a bearer token: a generated one and a given one."""

from __future__ import annotations

import httpx
import pytest
from deploy_helpers import SHOUT, Home, ok, outputs, table

import serving

GIVEN_KEY = "given-key-for-tests-0123456789"


@pytest.fixture(scope="module")
def locked(module_home: Home) -> Home:
    out = ok(module_home.cli("pipeline", "deploy", SHOUT, "--name", "locked", "--generate-auth-key"))
    assert "RUNNING" in out and "bearer token" in out
    key = module_home.deployment("locked").auth_key
    assert key and key not in out
    out = ok(module_home.cli("pipeline", "deploy", SHOUT, "--name", "keyed", "--auth-key", GIVEN_KEY))
    assert "RUNNING" in out and GIVEN_KEY not in out
    return module_home


def generated_key(home: Home) -> str:
    key = home.deployment("locked").auth_key
    assert key
    return key


def post(url: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(f"{url}/invoke", json={"parameters": {"word": "k"}}, headers=headers, timeout=30)


@pytest.mark.parametrize("name", ["locked", "keyed"])
def test_http_needs_the_key(locked: Home, name: str) -> None:
    dep = locked.deployment(name)
    key = dep.auth_key
    assert key == (GIVEN_KEY if name == "keyed" else generated_key(locked))
    missing = post(dep.url, None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert post(dep.url, "wrong").status_code == 401
    good = post(dep.url, key)
    assert good.status_code == 200 and good.json()["outputs"] == {"loud": "K!"}
    assert httpx.get(f"{dep.url}/readyz", timeout=10).status_code == 200  # probes stay open


def test_describe_hides_the_key_unless_asked(locked: Home) -> None:
    key = generated_key(locked)
    hidden = ok(locked.cli("deployment", "describe", "locked"))
    assert key not in hidden
    assert "set (--show-secret to print)" in hidden
    assert "Authorization: Bearer $SERVING_AUTH_KEY" in hidden

    shown = ok(locked.cli("deployment", "describe", "locked", "--show-secret"))
    assert f"Authorization: Bearer {key}" in shown
    assert any(ln.startswith("Auth key") and ln.split()[-1] == key for ln in shown.splitlines())

    assert GIVEN_KEY in ok(locked.cli("deployment", "describe", "keyed", "--show-secret"))
    assert GIVEN_KEY not in ok(locked.cli("deployment", "describe", "keyed"))


def test_the_key_is_not_leaked_by_list_or_logs(locked: Home) -> None:
    key = generated_key(locked)
    listing = ok(locked.cli("deployment", "list"))
    assert table(listing)["locked"][-1] == "RUNNING"
    for name in ("locked", "keyed"):
        secret = key if name == "locked" else GIVEN_KEY
        assert secret not in listing
        post(locked.deployment(name).url, secret)
        assert secret not in ok(locked.cli("deployment", "logs", name))


@pytest.mark.parametrize("name", ["locked", "keyed"])
def test_cli_and_sdk_use_the_stored_key(locked: Home, name: str) -> None:
    assert outputs(ok(locked.cli("deployment", "invoke", name, "--word=cli"))) == {"loud": "CLI!"}
    reply = serving.Client(locked.path).get_deployment(name).invoke(word="sdk")
    assert reply["outputs"] == {"loud": "SDK!"}
    assert outputs(ok(locked.cli("deployment", "invoke", name, "--wait", "--word=job"))) == {"loud": "JOB!"}
