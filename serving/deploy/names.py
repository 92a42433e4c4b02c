"""What a deployment may be called.

A deployment's name becomes a container name, a Kubernetes object name and a word in
the commands the CLI prints for it, so it must be valid as all of them: an RFC 1123
label (lowercase letters, digits and `-`, at most 63 characters, starting and ending
with a letter or digit). One function checks it, for every flavor, the CLI and the SDK.
"""

from __future__ import annotations

import re

MAX_LENGTH = 63
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


class InvalidNameError(ValueError):
    """The name cannot be used; the message says why in one line."""


def validate_name(name: str, what: str = "deployment name") -> str:
    """Return `name` if it is a valid deployment name, else raise InvalidNameError."""
    rule = (
        f"use lowercase letters, digits and '-', at most {MAX_LENGTH} characters,"
        " starting and ending with a letter or digit"
    )
    if not name:
        raise InvalidNameError(f"the {what} is empty; {rule}")
    if len(name) > MAX_LENGTH:
        raise InvalidNameError(f"{what} {name!r} is {len(name)} characters long; {rule}")
    if _LABEL.fullmatch(name) is None:
        bad = sorted({c for c in name if c not in _ALLOWED})
        why = (
            f"has {', '.join(repr(c) for c in bad)}"
            if bad
            else "does not start and end with a letter or digit"
        )
        raise InvalidNameError(f"{what} {name!r} {why}; {rule}")
    return name
