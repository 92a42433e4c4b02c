"""Short-lived tokens that let a browser's `EventSource` follow one job.

`EventSource` cannot send an `Authorization` header, and the long-lived key must never
travel in a URL (URLs end up in proxy logs, history and Referer headers). So an
authenticated `POST /jobs/{id}/stream-token` mints a token that is good for one job's
`GET /stream/{id}` only, for `TTL` seconds: `<expiry>.<signature>`, the signature an
HMAC-SHA256 over the job id and the expiry with a key derived from `SERVING_AUTH_KEY`.
Nothing is stored: any worker or replica sharing the key verifies it, and a leaked
token opens one job's events for a minute or two, nothing else. The token only has to
be valid when a stream (re)connects; a stream already open runs to its end.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_to_bytes

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from jobs import JobManager, JobNotFound
from serving.openapi import ApiDocument, json_reply, problem_reply, ref
from serving.responses import json_response, problem_response

TTL = 120  # seconds
_CONTEXT = b"serving stream token v1"


class StreamTokens:
    def __init__(self, auth_key: str, ttl: int = TTL) -> None:
        # A derived key: a token never is, nor reveals, an HMAC made with the key itself.
        self._key = hmac.new(auth_key.encode(), _CONTEXT, hashlib.sha256).digest()
        self.ttl = ttl

    def _sign(self, job_id: str, expires: int) -> str:
        mac = hmac.new(self._key, f"{job_id}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def mint(self, job_id: str, now: float | None = None) -> str:
        expires = int(now if now is not None else time.time()) + self.ttl
        return f"{expires}.{self._sign(job_id, expires)}"

    def valid(self, token: str, job_id: str, now: float | None = None) -> bool:
        expiry, sep, signature = token.partition(".")
        if not sep or not expiry.isascii() or not expiry.isdigit() or len(expiry) > 12:
            return False
        expires = int(expiry)
        if expires < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(signature.encode(), self._sign(job_id, expires).encode())


def token_from_query(query_string: bytes) -> str | None:
    """The `token` query parameter, if any (the only place a stream token is taken from)."""
    for part in query_string.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"token":
            return unquote_to_bytes(value.decode("latin-1")).decode("latin-1")
    return None


def stream_token_endpoint(
    manager: JobManager, auth_key: str | None
) -> Callable[[Request], Awaitable[Response]]:
    """`POST /jobs/{job_id}/stream-token`: behind the auth key itself, 404 for an unknown
    job. Without a key there is nothing to prove: the reply says so (`token: null`) and
    gives the plain stream URL, so a page needs no second code path."""
    tokens = StreamTokens(auth_key) if auth_key else None

    async def endpoint(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            await manager.get(job_id)
        except JobNotFound as exc:
            return problem_response(404, str(exc))
        if tokens is None:
            return json_response(StreamToken(token=None, expires_in=None, stream_url=f"/stream/{job_id}"))
        token = tokens.mint(job_id)
        return json_response(
            StreamToken(token=token, expires_in=tokens.ttl, stream_url=f"/stream/{job_id}?token={token}"),
            headers={"Cache-Control": "no-store"},
        )

    return endpoint


class StreamToken(msgspec.Struct, kw_only=True):
    """A token for `GET /stream/{job_id}?token=...`; `stream_url` already carries it."""

    token: str | None
    expires_in: int | None
    stream_url: str


def stream_token_openapi(doc: ApiDocument) -> None:
    """Document `POST /jobs/{job_id}/stream-token` (the auth scheme and 401 come from `doc`)."""
    doc.add_types(StreamToken)
    doc.add(
        "/jobs/{job_id}/stream-token",
        "post",
        {
            "summary": "A short-lived token for GET /stream/{job_id}?token=... (for EventSource)",
            "operationId": "stream_token",
            "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": json_reply(
                    "The token, its lifetime in seconds, and the stream URL carrying it"
                    " (token null when the daemon has no auth key)",
                    ref("StreamToken"),
                ),
                "404": problem_reply("No such job"),
            },
        },
    )
