"""The broker's ORM models; importing this package registers every table."""

from .audit import AuditEvent
from .benchmark import GpuResult, NodeRate, RunState, ValidationRun
from .billing import ChargeLine
from .cluster import Cluster, ClusterStatus, Node, Partition, Validation
from .job import (
    LIVE_STATES,
    TERMINAL_STATES,
    DependencyCondition,
    Job,
    JobDependency,
    JobStatus,
    JobTask,
)
from .ledger import Balance, EntryKind, LedgerEntry
from .project import Project, ProjectStatus
from .tenant import ApiToken, Enterprise, EnterpriseStatus, PeriodKind, Role
from .webhook import DeliveryStatus, JobEvent, ProjectSecret, Webhook, WebhookDelivery
from .workspace import JobIO, Workspace, WorkspaceFile

__all__ = [
    "LIVE_STATES",
    "TERMINAL_STATES",
    "ApiToken",
    "AuditEvent",
    "Balance",
    "ChargeLine",
    "Cluster",
    "ClusterStatus",
    "DeliveryStatus",
    "DependencyCondition",
    "Enterprise",
    "EnterpriseStatus",
    "EntryKind",
    "GpuResult",
    "Job",
    "JobDependency",
    "JobEvent",
    "JobIO",
    "JobStatus",
    "JobTask",
    "LedgerEntry",
    "Node",
    "NodeRate",
    "Partition",
    "PeriodKind",
    "Project",
    "ProjectSecret",
    "ProjectStatus",
    "Role",
    "RunState",
    "Validation",
    "ValidationRun",
    "Webhook",
    "WebhookDelivery",
    "Workspace",
    "WorkspaceFile",
]
