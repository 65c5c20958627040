"""Scheduler adapters: submit, follow and cancel batch jobs on a cluster's scheduler.

The package knows nothing of tenants, quotas or the broker's database.
"""

from .base import (
    TAG_PREFIX,
    ClusterInfo,
    JobInfo,
    JobSpec,
    JobState,
    NodeInfo,
    PartitionInfo,
    SchedulerAdapter,
)
from .errors import (
    AdapterConfigError,
    JobNotFound,
    SchedulerError,
    SchedulerUnavailable,
    SubmitRejected,
)
from .registry import ADAPTER_KINDS, create_adapter

__all__ = [
    "ADAPTER_KINDS",
    "TAG_PREFIX",
    "AdapterConfigError",
    "ClusterInfo",
    "JobInfo",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "NodeInfo",
    "PartitionInfo",
    "SchedulerAdapter",
    "SchedulerError",
    "SchedulerUnavailable",
    "SubmitRejected",
    "create_adapter",
]
