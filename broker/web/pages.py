"""The dashboard's pages (GET): each gathers reports and renders one template."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from ..errors import InvalidInput
from ..models import JobStatus, Validation
from ..schemas.common import NO_NUL
from ..services import clusters, ledger, reports, statements, tokens, validation, workspaces
from ..units import mflops_to_tflops
from . import charts
from .deps import Db, HtmlErrorRoute, Operator, render, secure

router = APIRouter(route_class=HtmlErrorRoute)
#: A filter from the query string, and a cluster's name in a path: no NUL (which
#: PostgreSQL's text cannot hold: a database error, where it is the request's).
Filter = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]
ClusterName = Annotated[str, Path(max_length=200, pattern=NO_NUL)]
STATEMENT_ROUTE = "/api/v1/enterprises/{enterprise_id}/usage"


def _now() -> datetime:
    return datetime.now(UTC)


def _uuid(value: str | None, field: str) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise InvalidInput(field, "is not an id") from exc


@router.get("", response_class=HTMLResponse)
def overview(request: Request, db: Db, me: Operator) -> HTMLResponse:
    totals = reports.center_totals(db)
    states = reports.jobs_by_state(db)
    summaries = reports.cluster_summaries(db)
    burning = reports.enterprise_page(db, per_page=10, sort="used", now=_now()).rows
    return render(
        request,
        db,
        "overview.html",
        totals=totals,
        clusters=summaries,
        clusters_up=sum(c.status == "up" for c in summaries),
        live_jobs=sum(n for s, n in states.items() if s in ledger.CAPACITY_STATES),
        lost_jobs=states.get(JobStatus.LOST, 0),
        total_jobs=sum(states.values()),
        quota_svg=charts.quota_bars(totals.granted_units, totals.held_units, totals.charged_units),
        states_svg=charts.state_bars({s.value: n for s, n in states.items()}),
        burning_svg=charts.used_fraction_bars(
            [e.name for e in burning], [e.used_fraction for e in burning]
        ),
    )


@router.get("/enterprises", response_class=HTMLResponse)
def enterprises(
    request: Request, db: Db, me: Operator, page: int = 1, sort: str = "name"
) -> HTMLResponse:
    result = reports.enterprise_page(db, page=page, sort=sort, now=_now())
    return render(
        request,
        db,
        "enterprises.html",
        page=result,
        sort=sort,
        used_svg=charts.used_fraction_bars(
            [e.name for e in result.rows], [e.used_fraction for e in result.rows], wide=True
        ),
    )


@router.get("/enterprises/{enterprise_id}", response_class=HTMLResponse)
def enterprise(
    request: Request, db: Db, me: Operator, enterprise_id: uuid.UUID, month: str | None = None
) -> HTMLResponse:
    now = _now()
    ent = reports.get_enterprise(db, enterprise_id)
    month = statements.check_month(month or now.strftime("%Y-%m"))
    summary = reports.statement_summary(db, enterprise_id, month)
    burn = reports.burn_down(db, ent, now)
    top = reports.top_projects(db, enterprise_id, limit=10)
    projects = reports.top_projects(db, enterprise_id, limit=500)
    return render(
        request,
        db,
        "enterprise.html",
        ent=ent,
        ent_tokens=tokens.list_tokens(db, me, enterprise_id),
        bal=reports.enterprise_balance(db, enterprise_id),
        in_use=ledger.capacity_in_use_mflops(db, enterprise_id),
        burn=burn,
        burn_svg=charts.burn_down(burn, now),
        projects=sorted(projects, key=lambda p: (p.status.value != "draft", p.name)),
        workspace=workspaces.usage(db, [p.id for p in projects]),
        projects_svg=charts.usage_bars(
            [p.name for p in top], [p.charged_units for p in top], [p.held_units for p in top]
        ),
        month=month,
        statement=summary,
        csv_url=f"/ops/enterprises/{enterprise_id}/statement.csv?{urlencode({'month': month})}",
    )


@router.get("/enterprises/{enterprise_id}/statement.csv")
def statement_csv(
    request: Request, db: Db, me: Operator, enterprise_id: uuid.UUID, month: str
) -> Response:
    """The month's statement as CSV, one row per charge line, as the API gives it."""
    doc = statements.statement(db, me, enterprise_id, statements.check_month(month))
    name = f"statement-{doc['enterprise']}-{month}.csv"
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in name)
    response = Response(
        statements.as_csv(doc),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )
    return secure(response)


def _has_route(request: Request, path: str) -> bool:
    return any(getattr(r, "path", None) == path for r in request.app.routes)


@router.get("/enterprises/{enterprise_id}/ledger", response_class=HTMLResponse)
def enterprise_ledger(
    request: Request,
    db: Db,
    me: Operator,
    enterprise_id: uuid.UUID,
    month: str | None = None,
    before: int | None = None,
) -> HTMLResponse:
    ent = reports.get_enterprise(db, enterprise_id)
    month = month or _now().strftime("%Y-%m")
    try:
        since, until = reports.period_bounds(month)
    except ValueError as exc:
        raise InvalidInput("month", "must be YYYY-MM") from exc
    entries = ledger.list_entries(
        db, me, enterprise_id, limit=50, before_id=before, since=since, until=until
    )
    names = {p.id: p.name for p in reports.top_projects(db, enterprise_id, limit=1000)}
    statement = None
    if _has_route(request, STATEMENT_ROUTE):
        statement = STATEMENT_ROUTE.format(enterprise_id=enterprise_id) + f"?month={month}"
    return render(
        request,
        db,
        "ledger.html",
        ent=ent,
        month=month,
        entries=entries,
        projects=names,
        summary=reports.ledger_summary(db, enterprise_id, since, until),
        next_before=entries[-1].id if len(entries) == 50 else None,
        statement_url=statement,
    )


def _job_context(
    db: Db,
    enterprise: str | None,
    project: str | None,
    cluster: str | None,
    state: str | None,
    cursor: str | None,
) -> dict[str, Any]:
    ent_id = _uuid(enterprise, "enterprise")
    proj_id = _uuid(project, "project")
    if state and state not in JobStatus.__members__.values():
        raise InvalidInput("state", "is not a job state")
    f = reports.JobFilter(ent_id, proj_id, cluster or None, JobStatus(state) if state else None)
    rows, next_cursor = reports.job_page(db, f, cursor=cursor or None)
    shown = {
        "enterprise": enterprise or "",
        "project": project or "",
        "cluster": cluster or "",
        "state": state or "",
    }
    query = urlencode({k: v for k, v in shown.items() if v})
    return {
        "rows": rows,
        "next_cursor": next_cursor,
        "cursor": cursor,
        "f": shown,
        "query": query,
        "back": "/ops/jobs" + (f"?{query}" if query else ""),
        "ent_id": ent_id,
    }


@router.get("/jobs", response_class=HTMLResponse)
def jobs(
    request: Request,
    db: Db,
    me: Operator,
    enterprise: Filter = None,
    project: Filter = None,
    cluster: Filter = None,
    state: Filter = None,
    cursor: Filter = None,
) -> HTMLResponse:
    ctx = _job_context(db, enterprise, project, cluster, state, cursor)
    ent_id = ctx.pop("ent_id")
    return render(
        request,
        db,
        "jobs.html",
        enterprises=reports.enterprise_options(db),
        projects=reports.project_options(db, ent_id) if ent_id else [],
        clusters=reports.cluster_names(db),
        states=[s.value for s in JobStatus],
        **ctx,
    )


@router.get("/jobs/rows", response_class=HTMLResponse)
def job_rows(
    request: Request,
    db: Db,
    me: Operator,
    enterprise: Filter = None,
    project: Filter = None,
    cluster: Filter = None,
    state: Filter = None,
) -> HTMLResponse:
    """The first page's rows alone, for the live refresh."""
    ctx = _job_context(db, enterprise, project, cluster, state, None)
    ctx.pop("ent_id")
    return render(request, None, "_job_rows.html", **ctx)


@router.get("/clusters", response_class=HTMLResponse)
def cluster_list(request: Request, db: Db, me: Operator) -> HTMLResponse:
    return render(request, db, "clusters.html", clusters=reports.cluster_summaries(db))


RATE_WINDOW = timedelta(days=90)


def _charted(series: list[reports.RateSeries], node: str | None) -> list[reports.RateSeries]:
    """The chosen node's rate and, beyond the chart's limit, the nodes whose rate moved most."""
    if len(series) <= charts.MAX_RATE_LINES:
        return series
    chosen = [s for s in series if s.node == node]
    others = sorted((s for s in series if s.node != node), key=lambda s: -s.spread)
    keep = {s.node for s in chosen + others[: charts.MAX_RATE_LINES - len(chosen)]}
    return [s for s in series if s.node in keep]


@router.get("/clusters/{name}", response_class=HTMLResponse)
def cluster_detail(
    request: Request, db: Db, me: Operator, name: ClusterName, node: Filter = None
) -> HTMLResponse:
    now = _now()
    cluster = clusters.get_cluster(db, name)
    parts = clusters.partitions_of(db, cluster)
    nodes = reports.nodes_of(db, cluster)
    total = len(nodes) or sum(p.nodes for p in parts)
    series = reports.rate_history(db, cluster.id, now - RATE_WINDOW)
    shown = _charted(series, node)
    history = validation.history(db, name, node, limit=50) if node else []
    chosen = validation.find_node(db, name, node) if node else None
    rates = reports.node_rates(db, chosen.id, limit=50) if chosen else []
    gpu_history = reports.gpu_runs(db, chosen.id, limit=20) if chosen else []
    busy = reports.busy_nodes(db, name, now - timedelta(hours=24), now, buckets=48)
    rated = mflops_to_tflops(max((p.rated_mflops for p in parts), default=0))
    return render(
        request,
        db,
        "cluster.html",
        cluster=cluster,
        nodes=nodes,
        drained=[(n, r) for n, r in nodes if "drain" in n.state.lower()],
        credits={n.id: validation.failure_credits(db, name, n) for n, _ in nodes},
        busy_svg=charts.busy_nodes(busy, total),
        rate_svg=charts.billed_rate(
            reports.billed_rate_by_day(db, name, now - timedelta(days=30)), rated
        ),
        nodes_svg=charts.node_rates(
            [(n.name, mflops_to_tflops(r), n.validation.value) for n, r in nodes]
        ),
        history_svg=charts.rate_history(shown, now),
        history_note=(
            f"last {RATE_WINDOW.days} days, "
            + (
                f"{len(shown)} of {len(series)} nodes, those whose rate moved most"
                if len(shown) < len(series)
                else "one line per node"
            )
        ),
        latest=reports.latest_runs(db, cluster.id),
        gpus=reports.latest_gpus(db, [n.id for n, _ in nodes if n.gpus or n.gpu_mflops]),
        node=node,
        history=history,
        rates=rates,
        gpu_history=gpu_history,
        validation=Validation,
    )


@router.get("/projects", response_class=HTMLResponse)
def pending_projects(request: Request, db: Db, me: Operator) -> HTMLResponse:
    return render(request, db, "projects.html", projects=reports.pending_projects(db))
