"""JSON and problem+json responses, encoded with msgspec, for endpoints and raw ASGI code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

from jobs.records import InvocationMetadata
from serving.problems import PROBLEM_CONTENT_TYPE, FieldError, problem

_encoder = msgspec.json.Encoder()


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_encoder.encode(data), status, headers=headers, media_type="application/json")


def problem_response(
    status: int,
    detail: str,
    *,
    invoke: bool = False,
    title: str | None = None,
    errors: list[FieldError] | None = None,
    metadata: InvocationMetadata | None = None,
    execution_time: float = 0.0,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A problem+json response; the arguments are those of `serving.problems.problem`."""
    body = problem(
        status,
        detail,
        invoke=invoke,
        title=title,
        errors=errors,
        metadata=metadata,
        execution_time=execution_time,
    )
    return Response(_encoder.encode(body), status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


STORE_RETRY_AFTER = 2  # seconds; Redis restarts in about that, and clients back off


def store_unavailable(exc: Exception, *, invoke: bool = False) -> Response:
    """503 for a request the job store was needed for and did not answer: nothing about
    the request was wrong, so it says when to try again."""
    return problem_response(503, str(exc), invoke=invoke, headers={"Retry-After": str(STORE_RETRY_AFTER)})


def problem_bytes(status: int, detail: str, *, invoke: bool = False) -> bytes:
    """The encoded body alone, for raw ASGI middleware that answers before any endpoint
    (and so any Starlette `Response`) is involved."""
    return _encoder.encode(problem(status, detail, invoke=invoke))
