"""The one error shape every endpoint uses: RFC 9457 problem+json.

/invoke errors add the reference wire format's `success: false` and `error` to it, so
a client of the reference keeps working and a generic client sees a standard problem.
"""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from jobs.records import InvocationMetadata

PROBLEM_CONTENT_TYPE = "application/problem+json"

TITLES = {
    400: "Malformed request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
    504: "Invocation timed out",
}


class FieldError(msgspec.Struct, frozen=True):
    """One bad field: `loc` is a dotted path such as `parameters.order.qty`."""

    loc: str
    msg: str


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    request_id: str | None = None


class InvokeProblem(msgspec.Struct, kw_only=True):
    """An /invoke failure: the reference's fields plus the problem+json ones."""

    success: bool = False
    outputs: None = None
    execution_time: float = 0.0
    metadata: InvocationMetadata | None = None
    error: str
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    request_id: str | None = None


_encoder = msgspec.json.Encoder()


def problem_response(
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = Problem(
        title=TITLES.get(status, "Error"), status=status, detail=detail, errors=errors, request_id=request_id
    )
    return Response(_encoder.encode(body), status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


RUN_FAILED = "Pipeline failed"


def invoke_problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[FieldError] | None = None,
    metadata: InvocationMetadata | None = None,
    execution_time: float = 0.0,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = InvokeProblem(
        error=detail,
        title=title or TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        errors=errors,
        metadata=metadata,
        execution_time=execution_time,
        request_id=request_id,
    )
    return Response(_encoder.encode(body), status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


def problem_bytes(status: int, detail: str, request_id: str | None = None, *, invoke: bool = False) -> bytes:
    """For raw ASGI middleware that answers before any endpoint runs; `invoke=True`
    adds /invoke's `success: false` and `error` fields."""
    title = TITLES.get(status, "Error")
    if invoke:
        body: msgspec.Struct = InvokeProblem(
            error=detail, title=title, status=status, detail=detail, request_id=request_id
        )
    else:
        body = Problem(title=title, status=status, detail=detail, request_id=request_id)
    return _encoder.encode(body)
