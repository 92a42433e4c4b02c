"""A stalled capture store against a real daemon: runs.db held under an exclusive lock
by another connection. Each write waits out SQLite's 5 s busy timeout, far too slowly
for a count of failures to open the breaker; the write deadline opens it, so /metrics
shows it open and the drops counted under it, not as queue_full."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families

HELLO = f"{Path(__file__).resolve().parent.parent.parent / 'examples' / 'hello.py'}:hello"
GUARD = 30.0  # seconds; a hang guard only (a stuck write takes the 5 s busy timeout)


def samples(client: httpx.Client) -> dict[tuple[str, str], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, s.labels.get("reason", "")): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def stored(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=0)
    try:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.OperationalError:  # locked, or the schema is not there yet
        return -1
    finally:
        conn.close()


def test_a_locked_run_store_opens_the_breaker_and_drops_count_under_it(daemon: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    d = daemon(HELLO, SERVING_HOME=str(home), capture_breaker_cooldown=1, log_level="warning")
    db = home / "runs.db"
    with d.client() as client:
        assert client.post("/invoke", json={}).status_code == 200
        wait_until(lambda: stored(db) == 1, "the first run in runs.db", timeout=GUARD)

        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            assert client.post("/invoke", json={}).status_code == 200  # its write gets stuck
            wait_until(
                lambda: samples(client).get(("serving_capture_breaker_open", "")) == 1,
                "the breaker to open",
                timeout=GUARD,
                detail=d.stderr_detail,
            )
            before = samples(client)
            for _ in range(100):
                assert client.post("/invoke", json={}).status_code == 200  # never slowed
            wait_until(
                lambda: (
                    samples(client).get(("serving_capture_dropped_total", "breaker_open"), 0)
                    - before.get(("serving_capture_dropped_total", "breaker_open"), 0)
                    >= 100
                ),
                "100 drops counted under the breaker",
                timeout=GUARD,
            )
            after = samples(client)
            assert after.get(("serving_capture_dropped_total", "queue_full"), 0) == 0
            assert after[("serving_capture_breaker_open", "")] == 1
            breaker = client.get("/status").json()["capture"]["breaker"]
            assert breaker["state"] == "open", breaker
            assert "2.5s" in breaker["last_error"], breaker
        finally:
            lock.execute("ROLLBACK")
            lock.close()

        # The store is free again: after the cooldown a probe closes the breaker.
        def recovered() -> bool:
            assert client.post("/invoke", json={}).status_code == 200
            return samples(client).get(("serving_capture_breaker_open", "")) == 0

        wait_until(recovered, "the breaker to close", timeout=GUARD, interval=0.2)
        count = stored(db)
        assert client.post("/invoke", json={}).status_code == 200
        wait_until(lambda: stored(db) > count, "a new run in runs.db", timeout=GUARD)
    assert "capture_sink_slow" in d.logs()
