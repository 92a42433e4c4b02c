"""A pipeline that gives capture something of everything to record.

Fan-out from `load` (sync) to `total` (async), `chart` (sync, attaches and returns a
visualization) and `square` (sync, `cache=True`); `spell` is a sync generator and `echo`
an async generator; `summarize` (async) joins them and fails on request (`fail=True`).
Steps print, log through the stdlib and through structlog, each line carrying `marker`,
so a test can tell runs apart. `password`, `token` and `config["api_key"]` are secrets
that must never reach the store; `blob` is padding for truncation tests.

`CALLS` counts how often each step body ran in this process (for cache tests).
"""

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import structlog

from runtimes.visualize import Visualization, visualize
from serving import pipeline, step

CALLS: collections.Counter[str] = collections.Counter()


@step
def load(marker: str, n: int) -> Annotated[list[int], "numbers"]:
    CALLS["load"] += 1
    print(f"print-sync {marker}")
    logging.getLogger("tests.observed").warning("logging-sync %s", marker)
    return list(range(n))


@step
async def total(numbers: list[int], marker: str) -> Annotated[int, "total"]:
    CALLS["total"] += 1
    await asyncio.sleep(0)
    print(f"print-async {marker}")
    structlog.get_logger("tests.observed").info("structlog-async", marker=marker)
    await asyncio.sleep(0)
    logging.getLogger("tests.observed").warning("logging-async %s", marker)
    return sum(numbers)


@step
def chart(numbers: list[int]) -> tuple[Annotated[int, "count"], Annotated[Visualization, "chart"]]:
    CALLS["chart"] += 1
    visualize("<b>attached</b>", kind="html", name="attached")
    return len(numbers), Visualization(kind="svg", content="<svg></svg>", name="returned")


@step(cache=True)
def square(n: int) -> Annotated[int, "square"]:
    CALLS["square"] += 1
    return n * n


@step
def spell(marker: str) -> Iterator[str]:
    CALLS["spell"] += 1
    print(f"print-gen {marker}")
    yield from ("g", "e", "n")


@step
async def echo(marker: str) -> AsyncIterator[str]:
    CALLS["echo"] += 1
    print(f"print-agen {marker}")
    for part in ("a", "g", "e", "n"):
        await asyncio.sleep(0)
        yield part


@step
async def summarize(
    total: int,
    count: int,
    square: int,
    word: str,
    echoed: str,
    blob: str,
    fail: bool,
    password: str,
    token: str,
    config: dict[str, str],
) -> Annotated[dict[str, object], "summary"]:
    CALLS["summarize"] += 1
    if fail:
        raise ValueError("failure requested")
    return {
        "total": total,
        "count": count,
        "square": square,
        "word": word,
        "echoed": echoed,
        "blob_size": len(blob),
        "region": config.get("region"),
        "has_password": bool(password and token),
    }


@pipeline
def observed(
    marker: str = "m",
    n: int = 4,
    blob: str = "",
    fail: bool = False,
    password: str = "hunter2-secret-value",
    token: str = "tok-secret-value",
    config: dict[str, str] = {"api_key": "key-secret-value", "region": "eu"},
):
    numbers = load(marker, n)
    count, _chart = chart(numbers)
    sq = square(n)
    word = spell(marker)
    echoed = echo(marker)
    summary = summarize(
        total(numbers, marker),
        count,
        sq,
        word,
        echoed,
        blob=blob,
        fail=fail,
        password=password,
        token=token,
        config=config,
    )
    return {"summary": summary, "numbers": numbers, "word": word, "square": sq}
