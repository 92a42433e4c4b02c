"""`/metrics` of a two-worker daemon sums every worker, checked by a real Prometheus.

Prometheus is Debian's package (`apt-get install -y prometheus`, done by `.ci/run`); the
test runs its own server on a free port with a private storage folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_workers import HANG_GUARD, HELLO, answering_pids, worker_pids

INVOKE = 'serving_requests_total{method="POST",route="/invoke",status="200"}'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    """A private Prometheus server scraping one target every second."""

    def __init__(self, target: str, folder: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (apt-get install -y prometheus; .ci/run does it)")
        config = folder / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            f"scrape_configs:\n  - job_name: serving\n    static_configs:\n      - targets: ['{target}']\n"
        )
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = folder / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def query(self, expr: str) -> float | None:
        """The value of an instant query with one result, None before it has data."""
        try:
            r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        except httpx.TransportError:
            return None
        if r.status_code != 200:
            return None
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def detail(self) -> str:
        return f"prometheus log:\n{self.log.read_text()[-3000:]}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(HANG_GUARD)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        folder = tmp_path / "prometheus"
        folder.mkdir()
        started.append(Prometheus(target, folder))
        return started[-1]

    yield start
    for p in started:
        p.stop()


def scrape(url: str) -> dict[str, float]:
    with httpx.Client(timeout=HANG_GUARD) as client:
        r = client.get(f"{url}/metrics")
    assert r.status_code == 200, r.text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def invoke(url: str, n: int) -> None:
    for i in range(n):
        with httpx.Client(timeout=HANG_GUARD) as client:  # a new connection: any worker
            r = client.post(f"{url}/invoke", json={"parameters": {"name": str(i)}})
        assert r.status_code == 200, r.text


def test_prometheus_sees_the_sum_over_workers(job_store_url: str, daemon: Any, prometheus: Any) -> None:
    d = daemon(HELLO, workers=2, job_store=job_store_url)
    answering_pids(d, worker_pids(d))  # both workers serve (and count) requests
    sent = 40
    invoke(d.url, sent)
    # Every scrape, whichever worker answers it, shows every worker's count: no double
    # counting, nothing missing; the histogram and the invocation counter agree.
    for _ in range(4):
        samples = scrape(d.url)
        assert samples[INVOKE] == sent
        assert samples['serving_request_duration_seconds_count{route="/invoke"}'] == sent
        assert samples['serving_invocations_total{mode="sync",outcome="completed"}'] == sent
        assert samples["serving_inflight"] == 0
        assert samples["serving_step_threads_busy"] == 0  # every worker's threads, summed
        assert samples["serving_step_threads_abandoned_total"] == 0
    prom = prometheus(d.url.removeprefix("http://"))
    got = wait_until(
        lambda: prom.query(f"sum({INVOKE})") == sent and prom.query(f"sum({INVOKE})"),
        f"Prometheus to report {sent} invocations",
        detail=prom.detail,
    )
    assert got == sent
    assert prom.query(f"count({INVOKE})") == 1  # one series, not one per worker


def test_counts_survive_a_dead_worker(job_store_url: str, daemon: Any) -> None:
    d = daemon(HELLO, workers=2, job_store=job_store_url)
    pids = worker_pids(d)
    answering_pids(d, pids)
    invoke(d.url, 30)
    assert scrape(d.url)[INVOKE] == 30
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    d.wait_for_log(lambda e: e.get("event") == "worker_started" and e["worker_pid"] not in pids)
    invoke(d.url, 5)
    assert scrape(d.url)[INVOKE] == 35  # the dead worker's counts stay in the sum
