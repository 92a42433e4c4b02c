"""Two shutdown figures the tests check only as behaviour (issue 17.1 and 17.3):

1. seconds from SIGTERM to exit while two subscribers of a job with 20,000 1 KB events
   (one `GET /stream/{id}`, one WebSocket) never read, with SERVING_GRACEFUL_TIMEOUT=2:
   expected about graceful_timeout + 0.5 s (the cut-off) on both servers, where
   Hypercorn used to run until the clients left;
2. requests cut by SIGTERM under keep-alive load (`wrk -c 32` on `GET /livez`, signal
   after 3 s): wrk's read errors are requests sent on a kept-alive connection that the
   server closed unanswered; expected 0 on both servers (Hypercorn used to cut one per
   connection). Connect errors are new connections refused once the listener closed.

Usage: python bench/shutdown.py [--server hypercorn|uvicorn|both]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx
from limits import GUARD, HELLO, Daemon

ROOT = Path(__file__).resolve().parent.parent
CHATTY = f"{ROOT / 'tests' / 'pipelines' / 'chatty.py'}:chatty"


def _stalled(url: str, request: bytes) -> socket.socket:
    parts = urllib.parse.urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((parts.hostname, parts.port))
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return sock


def _ws_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stalled_exit(server: str, graceful: float) -> float:
    with tempfile.TemporaryDirectory() as home:
        d = Daemon(CHATTY, home, server=server, graceful_timeout=str(graceful), access_log="false")
        emitted = Path(home) / "emitted"
        body = {"parameters": {"emitted": str(emitted), "release": str(Path(home) / "never")}}
        job_id = httpx.post(f"{d.url}/invoke?mode=async", json=body).json()["job_id"]
        deadline = time.monotonic() + GUARD
        while not emitted.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        sse = _stalled(d.url, f"GET /stream/{job_id} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
        key = base64.b64encode(os.urandom(16)).decode()
        ws = _stalled(
            d.url,
            (
                "GET /stream HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        ws.sendall(_ws_frame(json.dumps({"type": "subscribe", "job_id": job_id}).encode()))
        time.sleep(1.0)  # let the writes to both stall
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(60)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()
            return float("inf")
        finally:
            sse.close()
            ws.close()
        return time.monotonic() - started


def keep_alive_cuts(server: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as home:
        d = Daemon(HELLO, home, server=server, graceful_timeout="5", access_log="false")
        wrk = subprocess.Popen(
            ["wrk", "-t2", "-c32", "-d8s", f"{d.url}/livez"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(3.0)  # mid-load
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(GUARD)
        out, _ = wrk.communicate(timeout=GUARD)
    errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors = dict(zip(errors, map(int, m.groups()), strict=True))
    requests = re.search(r"(\d+) requests in", out)
    errors["requests"] = int(requests.group(1)) if requests else 0
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["hypercorn", "uvicorn", "both"], default="both")
    parser.add_argument("--graceful", type=float, default=2.0)
    args = parser.parse_args()
    servers = ["hypercorn", "uvicorn"] if args.server == "both" else [args.server]
    for server in servers:
        took = stalled_exit(server, args.graceful)
        print(f"{server}: SIGTERM to exit, 2 stalled subscribers, graceful {args.graceful} s: {took:.2f} s")
        cuts = keep_alive_cuts(server)
        print(f"{server}: wrk -c32 /livez, SIGTERM mid-load: {cuts}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
