"""brokerctl nodes validate and usage export: node speed campaigns and monthly statements."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ..db import make_session_factory, session_scope
from ..errors import BrokerError
from ..models import RunState, ValidationRun
from ..services import clusters, statements, tenants, validation
from ..units import units_to_pfh
from . import _common as c
from .clusters import nodes_app

usage_app = typer.Typer(help="Usage statements.", no_args_is_help=True)


def _run_row(run: ValidationRun, node: str) -> dict[str, Any]:
    return {
        "run": run.id,
        "node": node,
        "partition": run.partition,
        "state": run.state.value,
        "scheduler_job_id": run.scheduler_job_id,
        "gemm_gflops": run.gemm_gflops,
        "fft_gflops": run.fft_gflops,
        "stream_gbs": run.stream_gbs,
        "peak_gflops": run.peak_gflops,
        "reasons": run.reasons,
    }


@nodes_app.command("validate")
def nodes_validate(
    cluster_pos: c.ClusterPos = None,
    partition: Annotated[str | None, typer.Option(help="Only nodes of this partition.")] = None,
    node: Annotated[str | None, typer.Option(help="Only this node.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the verdicts.")] = True,
    timeout_s: Annotated[float, typer.Option(help="Give up waiting after this long.")] = 1800,
    dry_run: c.DryRunOpt = False,
    as_json: c.JsonOpt = False,
    cluster_opt: c.ClusterOld = None,
) -> None:
    """Run the kernels on each node (exclusive job), judge them, set rates, drain the slow."""
    cluster = str(c.cluster_name(cluster_pos, cluster_opt))
    settings = c.settings()
    configs = c.load_clusters()
    if cluster not in {cfg.name for cfg in configs}:
        c.fail(f"unknown cluster {cluster!r}", c.USAGE_ERROR)
    pool = clusters.AdapterPool(configs)
    try:
        with c.database() as engine:
            factory = make_session_factory(engine)
            with session_scope(factory) as s:
                clusters.sync_config(s, configs)
                row = clusters.get_cluster(s, cluster)
                clusters.record_probe(s, row, clusters.probe(pool, cluster))
            if dry_run:
                with session_scope(factory) as s:
                    # What each node's failure would credit: its jobs since its last pass.
                    previews = [
                        validation.failure_credits(s, cluster, n)
                        for n in clusters.list_nodes(s, cluster)
                        if (node is None or n.name == node)
                        and (partition is None or partition in n.partitions)
                    ]
                _dry_run_out(cluster, previews, settings, as_json)
                return
            with c.unit_of_work() as s:
                runs = validation.start_campaign(
                    s, pool, settings, c.ADMIN, cluster, partition=partition, node=node
                )
                names = {r.id: validation.node_name(s, r) for r in runs}
            finished = _wait(factory, pool, settings, list(names), wait, timeout_s, as_json)
    finally:
        pool.close()
    rows = [_run_row(r, names[r.id]) for r in finished]
    if as_json:
        c.print_json(rows)
    else:
        c.table(
            f"validation on {cluster}",
            ["run", "node", "state", "GEMM GF/s", "FFT GF/s", "STREAM GB/s", "FMA GF/s", "reasons"],
            [
                (
                    r["run"],
                    r["node"],
                    r["state"],
                    _f(r["gemm_gflops"]),
                    _f(r["fft_gflops"]),
                    _f(r["stream_gbs"]),
                    _f(r["peak_gflops"]),
                    "; ".join(r["reasons"]),
                )
                for r in rows
            ],
        )
    if any(r["state"] in (RunState.FAILED, RunState.ERROR) for r in rows):
        raise typer.Exit(c.DOMAIN_ERROR)


def _dry_run_out(
    cluster: str, previews: list[validation.CreditPreview], settings: Any, as_json: bool
) -> None:
    quick = validation.is_quick(settings)
    if as_json:
        c.print_json(
            {
                "would_validate": [p.node for p in previews],
                "quick": quick,
                "if_failed": [
                    {
                        "node": p.node,
                        "credited_since": p.since,
                        "jobs": p.jobs,
                        "enterprises": p.enterprises,
                        "credit_pfh": units_to_pfh(p.units),
                    }
                    for p in previews
                ],
            }
        )
        return
    shown = ", ".join(p.node for p in previews) or "no node"
    c.say(f"would validate on {cluster}: {shown}", highlight=False)
    if quick:
        c.say(
            "quick runs (--quick): judged against the partitions' quick_references; "
            "without them a failing run degrades nothing",
            highlight=False,
        )
    for p in previews:
        what = (
            f"{units_to_pfh(p.units):g} PFlop·h to {p.jobs} job(s) of {p.enterprises} "
            f"enterprise(s) since its last pass ({p.since:%Y-%m-%d %H:%M} UTC)"
            if p.since is not None
            else "nothing (it never passed: no job to credit)"
        )
        c.say(f"  if {p.node} fails, it is drained and credits {what}", highlight=False)


def _f(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _wait(
    factory: Any,
    pool: clusters.AdapterPool,
    settings: Any,
    ids: list[int],
    wait: bool,
    timeout_s: float,
    as_json: bool,
) -> list[ValidationRun]:
    deadline = time.monotonic() + timeout_s
    with c.progress(as_json) as bar:
        task = bar.add_task("validating", total=len(ids))
        while True:
            with session_scope(factory) as s:
                validation.poll_runs(s, pool, settings, datetime.now(UTC))
            with session_scope(factory) as s:
                runs = [s.get(ValidationRun, i) for i in ids]
                done = [r for r in runs if r is not None and r.state.finished]
                bar.update(task, completed=len(done))
                if not wait or len(done) == len(ids) or time.monotonic() > deadline:
                    return [r for r in runs if r is not None]
            time.sleep(1.0)


@usage_app.command("export")
def usage_export(
    month: Annotated[str, typer.Option(help="The month, YYYY-MM.")],
    enterprise: Annotated[str | None, typer.Option(help="One enterprise (default: all).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write one CSV per enterprise into this folder (listed on stderr)."),
    ] = None,
    as_json: c.JsonOpt = False,
) -> None:
    """Monthly statements: JSON, a summary table, and with --out one CSV per enterprise."""
    try:
        statements.check_month(month)
    except BrokerError:
        c.fail("--month must be YYYY-MM", c.USAGE_ERROR)
    with c.unit_of_work() as s:
        ents = (
            [c.enterprise_ref(s, enterprise)]
            if enterprise
            else tenants.list_enterprises(s, c.ADMIN)
        )
        docs = [statements.statement(s, c.ADMIN, e.id, month) for e in ents]
    written: list[Path] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for doc in docs:
            path = out / f"usage-{month}-{doc['enterprise_id']}.csv"
            path.write_text(statements.as_csv(doc))
            written.append(path.resolve())
        # On stderr, so that stdout stays the table or the JSON a script parses.
        for path in written:
            c.say(f"wrote {path}", err=True, highlight=False, soft_wrap=True)
        if not written:
            c.say(f"wrote nothing: no enterprise in {month}", err=True, highlight=False)
    if as_json:
        c.print_json(docs)
        return
    c.table(
        f"usage {month}",
        ["enterprise", "node hours", "charged PFlop·h", "credited PFlop·h", "net PFlop·h", "price"],
        [
            (
                d["enterprise"],
                d["node_hours"],
                f"{d['charged_pfh']:g}",
                f"{d['credited_pfh']:g}",
                f"{d['net_pfh']:g}",
                f"{d['price_total']:g}",
            )
            for d in docs
        ],
    )
