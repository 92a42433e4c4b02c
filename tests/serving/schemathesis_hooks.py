"""Schemathesis hooks for `test_openapi_schemathesis.py` (loaded through SCHEMATHESIS_HOOKS).

Generated cases reuse short Idempotency-Key values ("0", "") across different bodies;
the server rightly answers such a reuse 422 (draft-ietf-httpapi-idempotency-key), which
`positive_data_acceptance` would read as a valid request refused. A key is made unique
per case, so every key still reaches the idempotent path.
"""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Runs in every phase (the `map_*` hooks skip the coverage phase)."""
    headers = case.headers
    if headers and "Idempotency-Key" in headers:
        headers["Idempotency-Key"] = f"{headers['Idempotency-Key']}-{uuid.uuid4().hex}"
