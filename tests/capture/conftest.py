"""Fixtures of the capture tests (defined in capture_helpers.py and pgdb.py)."""

from capture_helpers import observed_module, step_log_capture
from pgdb import pg_url

__all__ = ["observed_module", "pg_url", "step_log_capture"]
