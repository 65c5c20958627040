"""Errors raised by scheduler adapters.

Exception tree::

    SchedulerError(message, transient=False)
    ├── SchedulerUnavailable   transient: the scheduler did not answer (retry later)
    ├── SubmitRejected         permanent: the scheduler refused this job (do not retry)
    ├── JobNotFound            the scheduler knows no job with this id
    └── AdapterConfigError     the adapter is misconfigured (permanent)

``transient`` lets the caller tell "retry with backoff" from "give up and say why":
the worker keeps a job ACCEPTED on a transient error and REJECTs it on a permanent one.
"""

from __future__ import annotations

__all__ = [
    "AdapterConfigError",
    "JobNotFound",
    "SchedulerError",
    "SchedulerUnavailable",
    "SubmitRejected",
]


class SchedulerError(Exception):
    """Base of every adapter error; ``transient`` says whether retrying may help."""

    transient_default = False

    def __init__(
        self,
        message: str,
        *,
        transient: bool | None = None,
        cluster: str | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.transient = self.transient_default if transient is None else transient
        self.cluster = cluster
        self.code = code

    def __str__(self) -> str:
        where = f"[{self.cluster}] " if self.cluster else ""
        return f"{where}{self.message}"


class SchedulerUnavailable(SchedulerError):
    """The scheduler could not be reached or timed out: retry later."""

    transient_default = True


class SubmitRejected(SchedulerError):
    """The scheduler refused the job (bad account, impossible request...)."""


class JobNotFound(SchedulerError):
    """No job with this id is known to the scheduler."""


class AdapterConfigError(SchedulerError):
    """The adapter configuration is invalid."""
