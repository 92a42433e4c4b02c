"""Fixtures of the capture tests (defined in capture_helpers.py)."""

from capture_helpers import observed_module, step_log_capture

__all__ = ["observed_module", "step_log_capture"]
