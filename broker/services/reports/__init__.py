"""Read-only aggregates for the operator dashboard: totals, burn-down, job pages, cluster load.

Every query here is bounded: grouped sums over indexed columns, one page of rows, or
one enterprise's entries since its period began (``ix_ledger_entry_enterprise_created``).
Nothing writes; amounts stay integers of ledger units (1 GFLOP) until the template.
"""

from .billing import ProjectStatement, StatementSummary, statement_summary
from .center import (
    ClusterSummary,
    PendingProject,
    billed_rate_by_day,
    busy_nodes,
    center_totals,
    cluster_summaries,
    jobs_by_state,
    nodes_of,
    pending_count,
    pending_projects,
)
from .jobs import (
    JobFilter,
    JobRow,
    Option,
    cluster_names,
    decode_cursor,
    encode_cursor,
    enterprise_options,
    job_page,
    project_options,
)
from .nodes import RateSeries, gpu_runs, latest_gpus, latest_runs, node_rates, rate_history
from .quota import (
    BURN_WINDOW,
    BurnDown,
    BurnPoint,
    EnterpriseRow,
    Page,
    Projection,
    ProjectUsage,
    burn_down,
    enterprise_balance,
    enterprise_page,
    get_enterprise,
    ledger_summary,
    period_bounds,
    top_projects,
)

__all__ = [
    "BURN_WINDOW",
    "BurnDown",
    "BurnPoint",
    "ClusterSummary",
    "EnterpriseRow",
    "JobFilter",
    "JobRow",
    "Option",
    "Page",
    "PendingProject",
    "ProjectStatement",
    "ProjectUsage",
    "Projection",
    "RateSeries",
    "StatementSummary",
    "billed_rate_by_day",
    "burn_down",
    "busy_nodes",
    "center_totals",
    "cluster_names",
    "cluster_summaries",
    "decode_cursor",
    "encode_cursor",
    "enterprise_balance",
    "enterprise_options",
    "enterprise_page",
    "get_enterprise",
    "gpu_runs",
    "job_page",
    "jobs_by_state",
    "latest_gpus",
    "latest_runs",
    "ledger_summary",
    "node_rates",
    "nodes_of",
    "pending_count",
    "pending_projects",
    "period_bounds",
    "project_options",
    "rate_history",
    "statement_summary",
    "top_projects",
]
