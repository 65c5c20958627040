"""The broker's ORM models; importing this package registers every table."""

from .audit import AuditEvent
from .benchmark import NodeRate, RunState, ValidationRun
from .billing import ChargeLine
from .cluster import Cluster, ClusterStatus, Node, Partition, Validation
from .job import LIVE_STATES, TERMINAL_STATES, Job, JobStatus
from .ledger import Balance, EntryKind, LedgerEntry
from .project import Project, ProjectStatus
from .tenant import ApiToken, Enterprise, EnterpriseStatus, PeriodKind, Role

__all__ = [
    "LIVE_STATES",
    "TERMINAL_STATES",
    "ApiToken",
    "AuditEvent",
    "Balance",
    "ChargeLine",
    "Cluster",
    "ClusterStatus",
    "Enterprise",
    "EnterpriseStatus",
    "EntryKind",
    "Job",
    "JobStatus",
    "LedgerEntry",
    "Node",
    "NodeRate",
    "Partition",
    "PeriodKind",
    "Project",
    "ProjectStatus",
    "Role",
    "RunState",
    "Validation",
    "ValidationRun",
]
