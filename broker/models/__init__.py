"""The broker's ORM models; importing this package registers every table."""

from .audit import AuditEvent
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
    "Cluster",
    "ClusterStatus",
    "Enterprise",
    "EnterpriseStatus",
    "EntryKind",
    "Job",
    "JobStatus",
    "LedgerEntry",
    "Node",
    "Partition",
    "PeriodKind",
    "Project",
    "ProjectStatus",
    "Role",
    "Validation",
]
