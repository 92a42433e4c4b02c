"""Exceptions of the pipeline model and of a run.

Definition errors are raised while a pipeline loads and carry one line that names the
function and the parameter at fault, because that line is all the daemon prints when it
refuses to start.
"""

from __future__ import annotations


class PipelineDefinitionError(Exception):
    """A pipeline or step is wired or typed wrongly; raised at load, never per request."""


class StepError(Exception):
    """A step failed after its retries; the run fails with this message.

    The message is safe to show to a client (`step 'id' failed: Type: message`); the
    traceback of `cause` goes to the log only.
    """

    def __init__(self, step_id: str, cause: BaseException, *, attempts: int = 1) -> None:
        self.step_id = step_id
        self.cause = cause
        self.attempts = attempts
        super().__init__(f"step '{step_id}' failed: {type(cause).__name__}: {cause}")


class StepTimeoutError(Exception):
    """One attempt of a step ran past its own `timeout`."""


class RunTimeoutError(Exception):
    """A whole run ran past the invocation timeout; it has been cancelled."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"run timed out after {timeout:g}s")


class ParameterError(ValueError):
    """Request parameters failed validation; `errors` holds (dotted path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{loc}: {msg}" for loc, msg in errors))
