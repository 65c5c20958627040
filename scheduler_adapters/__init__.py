"""Scheduler adapters: submit, follow and cancel batch jobs on a cluster's scheduler.

The package knows nothing of tenants, quotas or the broker's database.
"""

from .arrays import ArraySpec, task_job_id
from .arrays import parse as parse_array
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
from .registry import ADAPTER_KINDS, create_accounting, create_adapter
from .slurm.accounting import (
    AccountSpec,
    Action,
    SlurmAccounting,
    billing_weights,
    pfh_to_billing_minutes,
    pflops_to_billing,
)
from .slurm.runas import Identity as PosixIdentity
from .slurm.runas import identity_of as posix_identity
from .slurm.script import NeutralisedDirective, env_name_refusal, neutralise_directives

__all__ = [
    "ADAPTER_KINDS",
    "TAG_PREFIX",
    "AccountSpec",
    "Action",
    "AdapterConfigError",
    "ArraySpec",
    "ClusterInfo",
    "JobInfo",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "NeutralisedDirective",
    "NodeInfo",
    "PartitionInfo",
    "PosixIdentity",
    "SchedulerAdapter",
    "SchedulerError",
    "SchedulerUnavailable",
    "SlurmAccounting",
    "SubmitRejected",
    "billing_weights",
    "create_accounting",
    "create_adapter",
    "env_name_refusal",
    "neutralise_directives",
    "parse_array",
    "pfh_to_billing_minutes",
    "pflops_to_billing",
    "posix_identity",
    "task_job_id",
]
