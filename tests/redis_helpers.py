"""The Redis of this machine, as the tests use it: one private key prefix per test.

An unreachable Redis fails the test in one line naming it, never a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from typing import Any

import pytest
from polling import GUARD, wait_until

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


class RedisServer:
    """A private `redis-server` on a free port, without persistence, that a test can stop
    and start again on the same port (Redis lost and back while daemons serve).

    `url` is fixed for its whole life. A missing binary or a server that does not answer
    fails the test in one line naming it.
    """

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on the PATH (the Redis-lost tests start one)", pytrace=False)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"redis-server :{self.port} exited with {self.proc.returncode}", pytrace=False)
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_until(answers, f"redis-server on port {self.port} to answer PING")
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM (no save: persistence is off), and wait until the process is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(GUARD)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
