"""What every `serving` CLI command shares: exit statuses, the one-line error, argparse
counts and how times and statuses are shown.

It lives apart from `serving.cli` so the command modules (`runs_cli`, `deploy.cli`)
can use it without importing `serving.cli`, which imports them. It imports nothing
heavy (no rich, no httpx), so `serving serve` pays nothing for it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn

# 0 done, 1 the operation failed, 2 a usage error (the README promises these).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def fail(message: str, status: int = EXIT_FAILED) -> int:
    """Print the one error line on stderr and return `status` for the caller to exit with;
    plain `print`, never rich, so a long message is not wrapped across lines."""
    print(f"serving: error: {message}", file=sys.stderr)
    return status


class Parser(argparse.ArgumentParser):
    """argparse with the README's promise kept: a usage error is one line (argparse
    prints the whole usage first), and a command group called without its verb lists
    the verbs instead of naming an internal `dest`. Sub-parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        verbs = self.verbs()
        if verbs and message.startswith("the following arguments are required"):
            message = f"which one? give a command: {', '.join(verbs)}"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def verbs(self) -> list[str]:
        """The sub-commands of this parser, if it is a command group."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return list(action.choices)
        return []


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for counts: a bad one is a usage error naming the option, where
    a bare `int` would let SQLite's LIMIT -1 (no limit) or a negative slice through."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def when(ts: float | None, *, zone: bool = True) -> str:
    """A timestamp in UTC, to the second; `zone=False` for a column whose header already
    says UTC. `-` for a missing one."""
    if ts is None:
        return "-"
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} UTC" if zone else text


_STATUS_STYLE = {
    # deployments (observed status)
    "RUNNING": "green",
    "PENDING": "yellow",
    "ERROR": "red",
    "ABSENT": "dim",
    "UNKNOWN": "magenta",
    # runs and steps
    "completed": "green",
    "failed": "red",
    "timed_out": "red",
    "canceled": "yellow",
    "cached": "cyan",
}


def styled_status(value: str) -> str:
    """`value` in rich markup, coloured by what it means (an unknown one is white)."""
    return f"[{_STATUS_STYLE.get(value, 'white')}]{value}[/]"
