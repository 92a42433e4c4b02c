"""The one error shape every endpoint uses: RFC 9457 problem+json.

/invoke errors add the reference wire format's `success: false` and `error` to it, so
a client of the reference keeps working and a generic client sees a standard problem.
Responses carrying these bodies are built in `serving.responses`.
"""

from __future__ import annotations

import msgspec

from jobs.records import InvocationMetadata
from serving.logs import request_id_var

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

RUN_FAILED = "Pipeline failed"


class FieldError(msgspec.Struct, frozen=True):
    """One bad field: `loc` is a dotted path such as `parameters.order.qty`."""

    loc: str
    msg: str


ABOUT_BLANK = "about:blank"  # RFC 9457: the problem is what the status code says


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem. `type` is always written (it has no default, so
    `omit_defaults` keeps it): generic clients look for it on every error."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    request_id: str | None = None


class InvokeProblem(Problem, kw_only=True, omit_defaults=False):
    """An /invoke failure: the reference's fields plus the problem+json ones."""

    # The docstring is the schema's description in /openapi.json. Every field is written,
    # nulls included (omit_defaults=False): the reference's clients expect the same keys
    # on failure as on success.

    success: bool = False
    outputs: None = None
    execution_time: float = 0.0
    metadata: InvocationMetadata | None = None
    error: str


def problem(
    status: int,
    detail: str,
    *,
    invoke: bool = False,
    title: str | None = None,
    errors: list[FieldError] | None = None,
    metadata: InvocationMetadata | None = None,
    execution_time: float = 0.0,
) -> Problem:
    """The body for one failure, naming the request being answered (its id comes from
    the request context the middleware set). `invoke=True` gives /invoke's shape;
    `metadata` and `execution_time` exist only in that shape."""
    title = title or TITLES.get(status, "Error")
    request_id = request_id_var.get()
    if invoke:
        return InvokeProblem(
            type=ABOUT_BLANK,
            error=detail,
            title=title,
            status=status,
            detail=detail,
            errors=errors,
            metadata=metadata,
            execution_time=execution_time,
            request_id=request_id,
        )
    return Problem(
        type=ABOUT_BLANK, title=title, status=status, detail=detail, errors=errors, request_id=request_id
    )
