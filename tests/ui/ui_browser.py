"""What the browser tests share besides fixtures (a module of its own: every test folder
has a `conftest`, so importing from one by name is ambiguous)."""

from __future__ import annotations

from playwright.sync_api import Page


class Watched:
    """A page and what its console said."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"exception: {e}"))
