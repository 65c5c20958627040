"""A Python client for the broker's API (sync and async, on httpx), and the PSI/J and
submitit plugins built on it. It imports nothing of the server: a team installs the
distribution and uses only this package (an import-linter contract holds it to that).

    from broker.client import Client, JobSpec

    with Client() as c:                      # HPC_BROKER_URL, HPC_BROKER_TOKEN, ...
        job = c.submit(JobSpec(name="hello", script="echo hi", time_limit_minutes=5))
        print(c.wait(job.id).state, c.output(job.id))
"""

from ._async import AsyncClient
from ._config import ClientConfig, load_config
from ._core import Backoff
from ._errors import (
    APIError,
    BadRequest,
    BrokerError,
    ConfigError,
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RangeNotSatisfiable,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    WaitTimeout,
)
from ._models import (
    LIVE_STATES,
    TERMINAL_STATES,
    Balance,
    Dependency,
    Job,
    JobEvent,
    JobPage,
    JobSpec,
    Me,
    ProjectBalance,
    Task,
    WorkspaceFile,
    WorkspaceListing,
)
from ._sync import Client

__all__ = [
    "LIVE_STATES",
    "TERMINAL_STATES",
    "APIError",
    "AsyncClient",
    "Backoff",
    "BadRequest",
    "Balance",
    "BrokerError",
    "Client",
    "ClientConfig",
    "ConfigError",
    "Conflict",
    "Dependency",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "Job",
    "JobEvent",
    "JobPage",
    "JobSpec",
    "Me",
    "NotFound",
    "PayloadTooLarge",
    "ProjectBalance",
    "QuotaExceeded",
    "RangeNotSatisfiable",
    "RateLimited",
    "ServerError",
    "Task",
    "TransportError",
    "Unauthorized",
    "WaitTimeout",
    "WorkspaceFile",
    "WorkspaceListing",
    "load_config",
]
