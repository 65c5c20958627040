"""The broker's domain errors; they carry no HTTP codes (the API maps them).

Exception tree::

    BrokerError(detail)
    ├── NotFound              the thing does not exist, or the caller may not see it
    ├── Unauthenticated       no token, or an unknown / revoked one
    ├── PermissionDenied      the caller's role does not allow this
    ├── InvalidInput(field)   a request field breaks a rule the schema cannot express
    ├── Conflict              the request clashes with current state
    │   ├── QuotaExceeded     not enough PFlop·h available for the hold
    │   ├── CapacityExceeded  the enterprise's capacity cap (PFLOP/s held at once) is reached
    │   └── IdempotencyMismatch  same Idempotency-Key, different body
    ├── RateLimited(retry_after_s)
    └── Unavailable           a dependency (database, scheduler) is down: retry later
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every domain error: ``detail`` is a message for the caller."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(BrokerError):
    pass


class Unauthenticated(BrokerError):
    pass


class PermissionDenied(BrokerError):
    pass


class InvalidInput(BrokerError):
    """A field breaks a rule; ``field`` names it (dotted path)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field


class Conflict(BrokerError):
    pass


class QuotaExceeded(Conflict):
    pass


class CapacityExceeded(Conflict):
    pass


class IdempotencyMismatch(BrokerError):
    pass


class RateLimited(BrokerError):
    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Unavailable(BrokerError):
    pass
