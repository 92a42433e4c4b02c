"""The dashboard at `/ui`: a page and its two assets, shipped inside the package.

Served by a raw ASGI layer in front of the auth check: the page itself holds nothing
secret (it asks for the key, and every call it makes is authenticated like any
client's), and it must load before the user has typed a key. `GET /` redirects a
browser (`Accept: text/html`) to it; every other client gets what it got before.
`/ui/config.json` tells the page, before its first call, whether a key is needed.
The files are read once at start; a strict Content-Security-Policy keeps the page to
its own origin (no CDN, no inline script).
"""

from __future__ import annotations

from importlib import resources

import msgspec
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.openapi import ApiDocument
from serving.responses import problem_bytes
from serving.settings import Settings

_FILES = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/": ("index.html", "text/html; charset=utf-8"),
}
_FILES.update(
    {
        "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
        "/ui/style.css": ("style.css", "text/css; charset=utf-8"),
    }
)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


PATHS = ("/ui", "/ui/app.js", "/ui/style.css", "/ui/config.json")


def is_ui_path(path: str) -> bool:
    """Served in front of the auth check (see the module's docstring)."""
    return path == "/ui" or path.startswith("/ui/")


def ui_openapi(doc: ApiDocument) -> None:
    """Document the page and its assets: open, like the page itself."""
    kinds = {"/ui": "text/html", "/ui/app.js": "text/javascript", "/ui/style.css": "text/css"}
    for path, media in kinds.items():
        reply = {"description": "The file", "content": {media: {"schema": {"type": "string"}}}}
        doc.add(path, "get", {"summary": f"The dashboard: {path}", "responses": {"200": reply}})
    config = {"type": "object", "properties": {"auth": {"type": "boolean"}}, "required": ["auth"]}
    doc.add(
        "/ui/config.json",
        "get",
        {
            "summary": "Whether the dashboard must ask for the key before its first call",
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": config}}}},
        },
    )


def _read(name: str) -> bytes:
    return (resources.files("serving") / "ui" / name).read_bytes()


class UIMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.pages = {path: (_read(name), media) for path, (name, media) in _FILES.items()}
        config = {"auth": bool(settings.auth_key)}
        self.pages["/ui/config.json"] = (msgspec.json.encode(config), "application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/" and scope["method"] in ("GET", "HEAD") and _wants_html(scope):
            await _respond(send, 307, b"", [(b"location", b"/ui"), (b"content-type", b"text/plain")])
            return
        if path != "/ui" and not path.startswith("/ui/"):
            await self.app(scope, receive, send)
            return
        page = self.pages.get(path)
        if page is None:
            body = problem_bytes(404, f"no route for {path}")
            await _respond(send, 404, body, [(b"content-type", b"application/problem+json")])
            return
        if scope["method"] not in ("GET", "HEAD"):
            body = problem_bytes(405, f"{scope['method']} is not allowed on {path}; use GET")
            headers = [(b"content-type", b"application/problem+json"), (b"allow", b"GET, HEAD")]
            await _respond(send, 405, body, headers)
            return
        content, media = page
        headers = [
            (b"content-type", media.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", CSP.encode()),
            (b"referrer-policy", b"no-referrer"),
        ]
        await _respond(send, 200, b"" if scope["method"] == "HEAD" else content, headers, len(content))


def _wants_html(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"accept":
            return b"text/html" in value
    return False


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], length: int | None = None
) -> None:
    headers = [*headers, (b"content-length", str(len(body) if length is None else length).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
