"""One worker of a supervised daemon: `python -m serving.worker FD SUPERVISOR_PID`.

Started only by `serving/supervisor.py`, never by hand: FD is the listening socket the
supervisor bound, and the settings come from the same `SERVING_*` variables. The worker
then starts exactly as a single daemon does, serving the inherited socket.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _die_with(supervisor_pid: int) -> None:
    """Ask the kernel for SIGTERM (a graceful drain) when the supervisor dies, so a
    supervisor killed with SIGKILL leaves no orphan serving the port on its own."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor_pid:  # it died before the request above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not all(a.isdigit() for a in argv):
        print(
            "serving: error: serving.worker is started by the supervisor (SERVING_WORKERS)", file=sys.stderr
        )
        return 2
    fd, supervisor_pid = int(argv[0]), int(argv[1])
    # A SIGTERM before the server's handlers are in place (serving/server.py unblocks
    # it there) would kill a starting worker instead of draining it.
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT))
    _die_with(supervisor_pid)
    from serving.cli import serve

    return serve(worker_fd=fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
