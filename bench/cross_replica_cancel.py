"""How long a cancel sent to replica B takes to stop a job running on replica A.

Two real daemons (gated test pipeline) share the local Redis under a private prefix;
each round submits on A, waits for the step to start, then times `POST
/jobs/{id}/cancel` on B until it answers 200 `canceled` (B waits for A's terminal
event, so this bounds the pub/sub delivery plus A's cancellation). Issue 12 asks for
under 100 ms.

    .venv/bin/python bench/cross_replica_cancel.py [rounds]
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time
import uuid

import httpx
import redis

ROOT = pathlib.Path(__file__).resolve().parent.parent
PORTS = ("8741", "8742")


def main(rounds: int = 20) -> None:
    tmp = pathlib.Path(tempfile.mkdtemp())
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env.update(
        SERVING_PIPELINE=f"{ROOT / 'tests/pipelines/gated.py'}:gated",
        SERVING_JOB_STORE=f"redis://127.0.0.1:6379/0?prefix={prefix}",
        SERVING_HOME=str(tmp),
        SERVING_ACCESS_LOG="false",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "serving"],
            cwd=ROOT,
            env={**env, "SERVING_PORT": p},
            stderr=subprocess.DEVNULL,
        )
        for p in PORTS
    ]
    a, b = (f"http://127.0.0.1:{p}" for p in PORTS)
    try:
        with httpx.Client(timeout=10) as c:
            for url in (a, b):
                while True:
                    try:
                        if c.get(f"{url}/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.05)
            times = []
            for i in range(rounds):
                g = tmp / f"g{i}"
                params = {k: f"{g}.{k}" for k in ("started", "release", "cancelled", "done")}
                params.update(tag=f"g{i}", linger="")
                job_id = c.post(f"{a}/invoke?mode=async", json={"parameters": params}).json()["job_id"]
                while not pathlib.Path(f"{g}.started").exists():
                    time.sleep(0.002)
                start = time.perf_counter()
                r = c.post(f"{b}/jobs/{job_id}/cancel")
                times.append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
        times.sort()
        print(
            f"cancel on B of a job running on A: median {times[len(times) // 2]:.1f} ms, "
            f"max {times[-1]:.1f} ms (n={rounds})"
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        client = redis.Redis()
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
