"""Raw ASGI middleware: request ids, access log, last-resort errors, bearer auth.

Written as plain ASGI callables (no BaseHTTPMiddleware) because they sit on every
request's path and must cost microseconds, not a task and a queue per request.
"""

from __future__ import annotations

import hmac
import time
from typing import Protocol

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtimes.ids import new_id
from serving.logs import AccessLog, request_id_var
from serving.metrics import HttpMetrics
from serving.problems import PROBLEM_CONTENT_TYPE
from serving.responses import problem_bytes
from serving.stream_tokens import StreamTokens, token_from_query

log = structlog.get_logger("serving.http")

_MAX_REQUEST_ID = 128
_PROBLEM_HEADERS = [(b"content-type", PROBLEM_CONTENT_TYPE.encode())]
_CLOSE = (b"connection", b"close")


class Closing(Protocol):
    closing: bool


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= _MAX_REQUEST_ID and value.isascii() and value.isprintable() and " " not in value


async def _send_problem(
    send: Send,
    status: int,
    detail: str,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    *,
    invoke: bool = False,
) -> None:
    body = problem_bytes(status, detail, invoke=invoke)
    headers = [*_PROBLEM_HEADERS, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Give each request an id (taken from X-Request-ID or made), log one access line,
    and turn any unhandled exception into a problem+json 500 without a traceback.

    Once `closing.closing` is true (the server has stopped accepting), every response
    also says `Connection: close`: a kept-alive connection closed between two requests
    cuts the one its client sends next, while this header makes the client send it on
    a new connection (refused here, so to another replica). Hypercorn (h11) and
    uvicorn both close the connection after such a response. Read per response, not
    per request, so requests under way when the server stops accepting get it too. Not
    from the start of the drain: clients sent away while this server still accepts
    would reconnect here, and a connection waiting in the listen backlog when the
    listener closes is reset.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log: AccessLog | None = None,
        metrics: HttpMetrics | None = None,
        closing: Closing | None = None,
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.metrics = metrics
        self.closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        rid = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value.decode("latin-1")
                break
        if rid is None or not _valid_request_id(rid):
            rid = new_id()
        token = request_id_var.set(rid)
        started = time.perf_counter()
        state = [500, False]  # status, response started
        rid_header = (b"x-request-id", rid.encode())
        closing = self.closing

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state[0] = message["status"]
                state[1] = True
                headers = message.get("headers")
                if type(headers) is not list:  # Starlette builds a fresh list per response
                    headers = message["headers"] = list(headers or ())
                headers.append(rid_header)
                if closing is not None and closing.closing:
                    headers.append(_CLOSE)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled_error", path=scope["path"])
            state[0] = 500
            if kind == "http" and not state[1]:
                await _send_problem(
                    send,
                    500,
                    "internal error; see the server log",
                    (rid_header,),
                    invoke=scope["path"] == "/invoke",
                )
        finally:
            if kind == "http":
                elapsed = time.perf_counter() - started
                if self.metrics is not None:
                    self.metrics.observe(scope, state[0], elapsed)
                if self.access_log is not None:
                    client = (scope.get("client") or ("", 0))[0]
                    self.access_log(
                        scope["method"], scope["path"], state[0], round(elapsed * 1000, 3), client, rid
                    )
            request_id_var.reset(token)


class AuthMiddleware:
    """Require `Authorization: Bearer <SERVING_AUTH_KEY>` except on probe paths.

    The comparison is constant-time so response timing does not leak the key. A
    `GET /stream/{job_id}` without the header may instead carry `?token=`, a stream
    token for that one job (`serving.stream_tokens`): what a browser's EventSource can
    send.
    """

    # /docs and its files hold nothing of the deployment: the page asks for the token,
    # and /openapi.json and every call it makes stay protected.
    OPEN_PATHS = frozenset({"/health", "/livez", "/readyz", "/metrics", "/docs"})
    OPEN_PREFIX = "/docs/static/"

    @classmethod
    def is_open(cls, path: str) -> bool:
        return path in cls.OPEN_PATHS or path.startswith(cls.OPEN_PREFIX)

    def __init__(self, app: ASGIApp, *, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()
        self.tokens = StreamTokens(key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (kind == "http" or kind == "websocket") and not self.is_open(scope["path"]):
            provided = b""
            for key, value in scope["headers"]:
                if key == b"authorization":
                    provided = value
                    break
            if not provided and kind == "http" and (streamed := self._streamed_with_token(scope)) is not None:
                if streamed:
                    await self.app(scope, receive, send)
                    return
                detail = "invalid or expired stream token"
            elif not hmac.compare_digest(provided, self.expected):
                detail = "missing bearer token" if not provided else "invalid bearer token"
            else:
                detail = ""
            if detail:
                if kind == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": detail})
                    return
                await _send_problem(
                    send,
                    401,
                    detail,
                    ((b"www-authenticate", b'Bearer realm="serving"'),),
                    invoke=scope["path"] == "/invoke",
                )
                return
        await self.app(scope, receive, send)

    def _streamed_with_token(self, scope: Scope) -> bool | None:
        """None: no stream token to judge here; else whether the one given is valid."""
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith("/stream/"):
            return None
        token = token_from_query(scope.get("query_string", b""))
        if token is None:
            return None
        return self.tokens.valid(token, path[len("/stream/") :])
