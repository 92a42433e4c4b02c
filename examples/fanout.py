"""Fan-out/fan-in with async steps: three lookups run concurrently, one step merges them.

    SERVING_PIPELINE=examples/fanout.py:enrich python -m serving
    curl -s localhost:8000/invoke -H 'content-type: application/json' \
         -d '{"parameters": {"text": "serving pipelines is fun", "delay": 0.2}}'

Each lookup sleeps `delay` seconds; the run takes about `delay`, not three times it,
because independent steps run at the same time.
"""

import asyncio
from typing import Annotated

from serving import pipeline, step


@step
async def count_words(text: str, delay: float) -> Annotated[int, "words"]:
    await asyncio.sleep(delay)
    return len(text.split())


@step
async def count_vowels(text: str, delay: float) -> Annotated[int, "vowels"]:
    await asyncio.sleep(delay)
    return sum(c in "aeiou" for c in text.lower())


@step
async def shout(text: str, delay: float) -> Annotated[str, "upper"]:
    await asyncio.sleep(delay)
    return text.upper()


@step
def merge(parts: list[object]) -> Annotated[dict[str, object], "summary"]:
    words, vowels, upper = parts
    return {"words": words, "vowels": vowels, "upper": upper}


@pipeline
def enrich(text: str = "hello world", delay: float = 0.05):
    words = count_words(text, delay)
    vowels = count_vowels(text, delay)
    upper = shout(text, delay)
    return merge([words, vowels, upper])
