"""brokerctl slurm sync and jobs reconcile: keep Slurm and the broker in agreement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

import scheduler_adapters as sa_

from ..services import clusters, reconcile, slurm_sync
from . import _common as c
from .jobs import jobs_app

slurm_app = typer.Typer(help="Slurm accounts and limits.", no_args_is_help=True)


@slurm_app.command("sync")
def slurm_sync_cmd(
    cluster_pos: Annotated[
        str | None,
        typer.Argument(
            metavar="CLUSTER", help="Only this cluster (default: all).", show_default=False
        ),
    ] = None,
    dry_run: c.DryRunOpt = False,
    as_json: c.JsonOpt = False,
    cluster_opt: c.ClusterOld = None,
) -> None:
    """Create accounts and users per enterprise and project; push limits from the ledger."""
    cluster = c.cluster_name(cluster_pos, cluster_opt, required=False)
    configs = c.load_clusters()
    if cluster is not None and cluster not in {cfg.name for cfg in configs}:
        c.fail(f"unknown cluster {cluster!r}", c.USAGE_ERROR)
    with c.unit_of_work() as s:
        settings = c.settings()
        service = (settings.validation_account, settings.validation_user)
        results = slurm_sync.sync(s, configs, dry_run=dry_run, only=cluster, service=service)
    if as_json:
        c.print_json([r.__dict__ for r in results])
    else:
        rows = []
        for r in results:
            status = r.error or r.skipped or ("would apply" if dry_run else "applied")
            rows += [(r.cluster, a, status) for a in r.actions] or [
                (r.cluster, "(in sync)", status)
            ]
        c.table(
            "slurm sync" + (" (dry run)" if dry_run else ""), ["cluster", "change", "status"], rows
        )
    if any(r.error for r in results):
        raise typer.Exit(c.DOMAIN_ERROR)


@jobs_app.command("reconcile")
def jobs_reconcile(
    cluster_pos: c.ClusterPos = None,
    since_hours: Annotated[float, typer.Option(min=0.01, help="Look back this far.")] = 24.0,
    cancel_strays: Annotated[
        bool, typer.Option("--cancel-strays", help="Cancel duplicates and unknown tagged jobs.")
    ] = False,
    dry_run: c.DryRunOpt = False,
    as_json: c.JsonOpt = False,
    cluster_opt: c.ClusterOld = None,
) -> None:
    """Adopt tagged scheduler jobs the database lost (crash between submit and commit)."""
    cluster = str(c.cluster_name(cluster_pos, cluster_opt))
    configs = {cfg.name: cfg for cfg in c.load_clusters()}
    if cluster not in configs:
        c.fail(f"unknown cluster {cluster!r}", c.USAGE_ERROR)
    pool = clusters.AdapterPool(list(configs.values()))
    now = datetime.now(UTC)
    try:
        with c.unit_of_work() as s:
            report = reconcile.reconcile(
                s,
                pool.get(cluster),
                cluster,
                since=now - timedelta(hours=since_hours),
                now=now,
                dry_run=dry_run,
                cancel_strays=cancel_strays,
            )
    except sa_.SchedulerError as exc:
        c.fail(f"cluster {cluster} did not answer: {exc}")
    finally:
        pool.close()
    if as_json:
        c.print_json({**report.__dict__, "dry_run": dry_run})
        return
    rows = [("adopted", j, s) for j, s in report.adopted]
    rows += [("duplicate", j, s) for j, s in report.duplicates]
    rows += [("stray", t, s) for t, s in report.orphans]
    rows += [("foreign (not adopted)", t, s) for t, s in report.foreign]
    title = f"reconcile {cluster}: {report.seen} tagged job(s)" + (" (dry run)" if dry_run else "")
    c.table(title, ["finding", "broker job / tag", "scheduler id"], rows)
