"""brokerctl jobs: list, show and cancel jobs across every enterprise."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..api import views
from ..models import JobStatus
from ..services import jobs, ledger
from . import _common as c

jobs_app = typer.Typer(help="Jobs of every enterprise.", no_args_is_help=True)

JobArg = Annotated[
    str, typer.Argument(help="Job id, or a unique prefix of it (the 8 digits tables show).")
]


def _amount(job: dict[str, Any]) -> str:
    """The charge once settled, else the hold (three significant digits)."""
    if job["charge_pfh"] is not None:
        return f"{job['charge_pfh']:.3g}"
    return f"held {job['hold_pfh']:.3g}"


def _rows(items: list[dict[str, Any]]) -> None:
    """One line a job that fits 80 columns; the scheduler id and the rest are in --json
    and `jobs show`."""
    c.table(
        "jobs",
        ["id", "name", "state", "cluster", "nodes", "PFlop·h", "created"],
        [
            (
                j["id"],
                j["name"],
                j["state"],
                f"{j['cluster']}/{j['partition']}",
                j["nodes"],
                _amount(j),
                j["created_at"],
            )
            for j in items
        ],
    )


@jobs_app.command("list")
def jobs_list(
    enterprise: Annotated[str | None, typer.Option(help="Enterprise id, name or account.")] = None,
    project: Annotated[str | None, typer.Option(help="Project id or unique name.")] = None,
    state: Annotated[JobStatus | None, typer.Option(help="Only jobs in this state.")] = None,
    cluster: Annotated[str | None, typer.Option(help="Only jobs on this cluster.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many.")] = 100,
    as_json: c.JsonOpt = False,
) -> None:
    """Jobs, newest first."""
    with c.unit_of_work() as s:
        ent_id = None if enterprise is None else c.enterprise_ref(s, enterprise).id
        proj_id = None if project is None else c.project_ref(s, project).id
        rows, _ = jobs.list_jobs(
            s,
            c.ADMIN,
            enterprise_id=ent_id,
            project_id=proj_id,
            state=state,
            cluster=cluster,
            limit=limit,
        )
        items = [c.dump(views.job(j)) for j in rows]
    if as_json:
        c.print_json(items)
    else:
        _rows(items)


@jobs_app.command("show")
def jobs_show(job_id: JobArg, as_json: c.JsonOpt = False) -> None:
    """One job: its spec, state, routing, scheduler id, hold and charge, ledger entries."""
    with c.unit_of_work() as s:
        job = jobs.get_job(s, c.ADMIN, c.job_ref(s, job_id))
        data = c.dump(views.job(job))
        data["ledger"] = [
            c.dump(views.entry(e))
            for e in ledger.list_entries(s, c.ADMIN, job.enterprise_id, job_id=job.id)
        ]
    if as_json:
        c.print_json(data)
        return
    flat = {k: v for k, v in data.items() if k not in ("routing", "ledger")}
    flat["routing"] = "; ".join(data["routing"].get("reasons", [])) if data["routing"] else ""
    c.fields(f"job {data['id']}", flat)
    c.table(
        "ledger",
        ["id", "kind", "PFlop·h", "memo", "at"],
        [
            (e["id"], e["kind"], f"{e['amount_pfh']:g}", e["memo"], e["created_at"])
            for e in data["ledger"]
        ],
    )


@jobs_app.command("cancel")
def jobs_cancel(
    job_ids: Annotated[list[str], typer.Argument(help="Job ids, or unique prefixes of them.")],
    dry_run: c.DryRunOpt = False,
    as_json: c.JsonOpt = False,
) -> None:
    """Cancel jobs: at once if never submitted, else the worker cancels them in the scheduler."""
    results: list[dict[str, Any]] = []
    with c.unit_of_work() as s, c.progress(as_json) as bar:
        ids = [c.job_ref(s, j) for j in job_ids]
        task = bar.add_task("cancelling", total=len(ids))
        for job_id in ids:
            job = jobs.get_job(s, c.ADMIN, job_id)
            was = job.state.value
            if job.state.terminal:
                outcome = "already ended"
            elif job.state is JobStatus.ACCEPTED and job.submit_attempts == 0:
                outcome = "cancelled"
            else:
                outcome = "cancel requested (the worker cancels it in the scheduler)"
            if not dry_run:
                job = jobs.cancel(s, c.ADMIN, job_id)
            results.append(
                {
                    "id": str(job_id),
                    "was": was,
                    "state": job.state.value,
                    "outcome": outcome,
                    "cluster": job.cluster,
                    "scheduler_job_id": job.scheduler_job_id,
                    "dry_run": dry_run,
                }
            )
            bar.advance(task)
    if as_json:
        c.print_json(results)
        return
    prefix = "would: " if dry_run else ""
    for r in results:
        c.say(f"{r['id']}: {prefix}{r['outcome']} (was {r['was']})", highlight=False)


@jobs_app.command("resolve")
def jobs_resolve(
    job_id: JobArg,
    memo: Annotated[str, typer.Option(help="The evidence: what it is and where it is kept.")],
    charge_seconds: Annotated[
        int | None,
        typer.Option(min=0, help="Charge this many seconds of its nodes; omit to close uncharged."),
    ] = None,
    nodes: Annotated[
        str | None, typer.Option(help="Comma-separated nodes it ran on (default: its recorded).")
    ] = None,
    as_json: c.JsonOpt = False,
) -> None:
    """Resolve a lost job (its scheduler no longer knows it; its hold was released):
    charge it from evidence, or close it uncharged. Settled once, audited."""
    with c.unit_of_work() as s:
        job = jobs.resolve_lost(
            s,
            c.ADMIN,
            c.job_ref(s, job_id),
            elapsed_s=charge_seconds,
            nodes=[n for n in (nodes or "").split(",") if n],
            memo=memo,
        )
        data = c.dump(views.job(job))
    if as_json:
        c.print_json(data)
        return
    c.fields(f"job {data['id']}", {k: data[k] for k in ("state", "charge_pfh", "reason")})
