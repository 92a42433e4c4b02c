"""The Redis of this machine, as the tests use it: one private key prefix per test.

An unreachable Redis fails the test in one line naming it, never a skip.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

REDIS_URL = os.environ.get("SERVING_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_client() -> Any:
    """A sync client of the test Redis; fails the test in one line naming it if unreachable."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.fail(f"Redis at {REDIS_URL} is unreachable ({exc}); the Redis tests need it", pytrace=False)
    return client


def drop_prefix(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
