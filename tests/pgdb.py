"""A private PostgreSQL database per test, on the machine's server (127.0.0.1:5432).

`pg_url` creates `serving_test_<random>` through a maintenance connection to the
`postgres` database, yields its URL, and drops it (closing whatever is still connected)
afterwards. An unreachable server fails the test with one line naming it: never a skip.
`TEST_POSTGRES_URL` points at another server's maintenance database.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

MAINTENANCE_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _maintenance() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(MAINTENANCE_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        pytest.fail(f"PostgreSQL at {MAINTENANCE_URL} is unreachable: {reason}", pytrace=False)


def database_url(name: str) -> str:
    return MAINTENANCE_URL.rsplit("/", 1)[0] + f"/{name}"


def create_database() -> str:
    """A new empty database; returns its name."""
    name = f"serving_test_{secrets.token_hex(6)}"
    with _maintenance() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    with _maintenance() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def query(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement in its own connection; rows for a SELECT, [] otherwise."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a database of this test's own, dropped after it."""
    name = create_database()
    try:
        yield database_url(name)
    finally:
        drop_database(name)
