"""`SERVING_CORS_ORIGINS`: pages on other origins may call the API (and stream SSE).

Starlette's `CORSMiddleware` does the work; it sits outside the auth check, because a
browser's preflight (`OPTIONS`) never carries the `Authorization` header, and so that
a 401 still carries the CORS headers a page needs to read it. No credentials (cookies)
are allowed: the API authenticates with a bearer header or a stream token, never a
cookie, so `*` cannot expose anything a cookie would have unlocked.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from serving.settings import Settings

ALLOW_HEADERS = [
    "Authorization",
    "Content-Type",
    "Last-Event-ID",
    "Idempotency-Key",
    "Prefer",
    "X-Request-ID",
]
EXPOSE_HEADERS = ["Location", "Retry-After", "X-Request-ID"]
ALLOW_METHODS = ["GET", "POST", "DELETE"]


def with_cors(app: ASGIApp, settings: Settings) -> ASGIApp:
    """`app` behind CORS when origins are configured, else `app` itself (no cost)."""
    origins = settings.cors_origin_list
    if not origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        allow_credentials=False,
        max_age=600,
    )
