"""brokerctl cluster | nodes: configured clusters, their reachability, and node drain/resume.

Clusters come from the clusters file (``BROKER_CLUSTERS_FILE``); the database mirrors
them with the status the worker last saw. ``nodes validate`` (benchmark runs) lives
with node validation: register it on ``nodes_app`` from that module
(``@nodes_app.command("validate")``) and import the module in ``broker.cli``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from sqlalchemy.orm import Session

import scheduler_adapters as sa_

from ..api import views
from ..errors import BrokerError
from ..models import Node
from ..services import clusters, reports, validation
from . import _common as c

cluster_app = typer.Typer(help="Clusters (declared in the clusters file).", no_args_is_help=True)
nodes_app = typer.Typer(help="Compute nodes of a cluster.", no_args_is_help=True)

ClusterArg = Annotated[str, typer.Argument(metavar="CLUSTER", help="Cluster name.")]
NodesArg = Annotated[list[str], typer.Argument(help="Node names.")]


# -- cluster -------------------------------------------------------------------------
@cluster_app.command("list")
def cluster_list(as_json: c.JsonOpt = False) -> None:
    """Configured clusters with the status the broker last recorded for each."""
    configs = c.load_clusters()
    with c.unit_of_work() as s:
        rows = {r.name: r for r in clusters.list_clusters(s)}
        items: list[dict[str, Any]] = []
        for cfg in configs:
            row = rows.get(cfg.name)
            items.append(
                {
                    "name": cfg.name,
                    "adapter": cfg.adapter,
                    "partitions": [p.name for p in cfg.partitions],
                    "nodes": sum(p.nodes for p in cfg.partitions),
                    "in_database": row is not None,
                    "status": row.status.value if row else "unknown",
                    "version": row.version if row else "",
                    "last_seen_at": row.last_seen_at if row else None,
                    "last_error": row.last_error if row else "",
                }
            )
    if as_json:
        c.print_json(items)
        return
    c.table(
        "clusters",
        ["name", "adapter", "partitions", "nodes", "status", "version", "last seen", "error"],
        [
            (
                i["name"],
                i["adapter"],
                ",".join(i["partitions"]),
                i["nodes"],
                i["status"] if i["in_database"] else "not in database",
                i["version"],
                i["last_seen_at"] or "",
                i["last_error"],
            )
            for i in items
        ],
    )


@cluster_app.command("ping")
def cluster_ping(
    names: Annotated[list[str] | None, typer.Argument(help="Clusters (default: all).")] = None,
    as_json: c.JsonOpt = False,
) -> None:
    """Ask each cluster's scheduler now and record status, load and nodes; exit 1 if one is down."""
    configs = c.load_clusters()
    known = {cfg.name for cfg in configs}
    wanted = names or [cfg.name for cfg in configs]
    for name in wanted:
        if name not in known:
            c.fail(f"cluster {name!r} is not in the clusters file", c.DOMAIN_ERROR)
    with c.unit_of_work() as s:
        clusters.sync_config(s, configs)  # as the API and worker do when they start
    pool = clusters.AdapterPool(configs)
    found: dict[str, tuple[clusters.Probe, float]] = {}
    try:
        with c.progress(as_json) as bar:  # outside any transaction: a ping may take seconds
            task = bar.add_task("pinging", total=len(wanted))
            for name in wanted:
                bar.update(task, description=f"pinging {name}")
                found[name] = _probe(pool, name)
                bar.advance(task)
    finally:
        pool.close()
    results = []
    with c.unit_of_work() as s:
        for name, (probe, ms) in found.items():
            row = clusters.get_cluster(s, name)
            clusters.record_probe(s, row, probe)
            results.append(
                {
                    "name": name,
                    "status": row.status.value,
                    "version": row.version,
                    "ms": ms,
                    "error": row.last_error,
                    "load": row.load or {},
                }
            )
    if as_json:
        c.print_json(results)
    else:
        c.table(
            "ping",
            ["cluster", "status", "version", "ms", "error"],
            [(r["name"], r["status"], r["version"], r["ms"], r["error"]) for r in results],
        )
    if any(r["status"] != "up" for r in results):
        raise typer.Exit(c.DOMAIN_ERROR)


def _probe(pool: clusters.AdapterPool, name: str) -> tuple[clusters.Probe, float]:
    started = time.perf_counter()
    try:
        probe = clusters.probe(pool, name)
    except sa_.SchedulerError as exc:  # an adapter that cannot even be configured
        probe = clusters.Probe(None, [], str(exc)[:1000])
    return probe, round((time.perf_counter() - started) * 1e3, 1)


# -- nodes ---------------------------------------------------------------------------
def _node_items(session: Session, cluster: str) -> list[dict[str, Any]]:
    row = clusters.get_cluster(session, cluster)
    rated = {p.name: p.rated_mflops for p in clusters.partitions_of(session, row)}
    default = max(rated.values(), default=0)
    nodes = clusters.list_nodes(session, cluster)
    gpus = reports.latest_gpus(session, [n.id for n in nodes if n.gpus or n.gpu_mflops])
    return [
        c.dump(
            views.node(
                n,
                next((rated[p] for p in n.partitions if p in rated), default),
                gpus.get(n.id, []),
            )
        )
        for n in nodes
    ]


def _gpus_cell(n: dict[str, Any]) -> str:
    """``2 x h200``; the count alone when untyped."""
    if not n["gpus"]:
        return "0"
    return f"{n['gpus']} x {n['gpu_type']}" if n.get("gpu_type") else str(n["gpus"])


@nodes_app.command("list")
def nodes_list(
    cluster: ClusterArg,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Ask the scheduler first (else: last seen).")
    ] = False,
    as_json: c.JsonOpt = False,
) -> None:
    """Nodes of a cluster: state, validation and billing rate."""
    pool = clusters.AdapterPool(c.load_clusters()) if refresh else None
    try:
        with c.unit_of_work() as s:
            if pool is not None:
                clusters.sync_config(s, list(pool.configs.values()))
                clusters.refresh(s, pool, clusters.get_cluster(s, cluster))
            items = _node_items(s, cluster)
    finally:
        if pool is not None:
            pool.close()
    if as_json:
        c.print_json(items)
        return
    c.table(
        f"nodes of {cluster}",
        [
            "name",
            "state",
            "validation",
            "TFLOP/s",
            "cpus",
            "memory MB",
            "gpus",
            "GPU TFLOP/s",
            "partitions",
            "reason",
        ],
        [
            (
                n["name"],
                n["state"],
                n["validation"],
                f"{n['rate_tflops']:g}" + ("" if n["measured"] else " (rated)"),
                n["cpus"],
                n["memory_mb"],
                _gpus_cell(n),
                " + ".join(f"{r:g}" for r in n["gpu_rates_tflops"]),
                ",".join(n["partitions"]),
                n["reason"],
            )
            for n in items
        ],
    )


NodeArg = Annotated[str, typer.Argument(metavar="NODE", help="Node name.")]


@nodes_app.command("gpus")
def nodes_gpus(cluster: ClusterArg, as_json: c.JsonOpt = False) -> None:
    """Each GPU of the cluster's nodes: its billing rate and its latest figures."""
    with c.unit_of_work() as s:
        items = [
            {"node": n["name"], **g} for n in _node_items(s, cluster) for g in n["gpu_figures"]
        ]
    if as_json:
        c.print_json(items)
        return
    c.table(
        f"GPUs of {cluster}",
        [
            "node",
            "gpu",
            "name",
            "TFLOP/s",
            "DGEMM GF/s",
            "SGEMM GF/s",
            "triad GB/s",
            "run",
            "verdict",
        ],
        [
            (
                g["node"],
                g["index"],
                g["name"] + (" (simulated)" if g["simulated"] else ""),
                "" if g["rate_tflops"] is None else f"{g['rate_tflops']:g}",
                _num(g["dgemm_gflops"]),
                _num(g["sgemm_gflops"]),
                _num(g["triad_gbs"]),
                g["run_id"],
                "passed" if g["passed"] else "; ".join(g["reasons"]),
            )
            for g in items
        ],
    )


@nodes_app.command("rates")
def nodes_rates(
    cluster: ClusterArg,
    node: NodeArg,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Versions shown.")] = 20,
    as_json: c.JsonOpt = False,
) -> None:
    """A node's billing rate history, newest first: CPU rate + each GPU's."""
    with c.unit_of_work() as s:
        row = validation.find_node(s, cluster, node)
        items = [c.dump(views.node_rate(r)) for r in reports.node_rates(s, row.id, limit)]
    if as_json:
        c.print_json(items)
        return
    c.table(
        f"rates of {cluster}/{node}",
        ["valid from", "TFLOP/s", "CPU", "GPUs", "precision", "samples", "run"],
        [
            (
                r["valid_from"],
                f"{r['rate_tflops']:g}",
                "" if r["cpu_rate_tflops"] is None else f"{r['cpu_rate_tflops']:g}",
                " + ".join(f"{g:g}" for g in r["gpu_rates_tflops"]),
                r["precision"] or "",
                r["samples"],
                r["run_id"] or "",
            )
            for r in items
        ],
    )


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _change_nodes(
    cluster: str, names: list[str], action: str, reason: str, dry_run: bool, as_json: bool
) -> None:
    configs = c.load_clusters()
    pool = clusters.AdapterPool(configs)
    results: list[dict[str, Any]] = []
    try:
        with c.unit_of_work() as s, c.progress(as_json) as bar:
            rows = {n.name: n for n in clusters.list_nodes(s, cluster)}
            missing = [n for n in names if n not in rows]
            if missing:
                c.fail(
                    f"unknown node(s) on {cluster}: {', '.join(missing)} "
                    f"(see `brokerctl nodes list {cluster} --refresh`)",
                    c.DOMAIN_ERROR,
                )
            task = bar.add_task(f"{action} on {cluster}", total=len(names))
            for name in names:
                results.append(_change_one(s, pool, cluster, rows[name], action, reason, dry_run))
                bar.advance(task)
    finally:
        pool.close()
    if as_json:
        c.print_json(results)
    else:
        prefix = "would " if dry_run else ""
        for r in results:
            done = "failed: " + r["error"] if r["error"] else f"{prefix}{action} (was {r['was']})"
            c.say(f"{cluster}/{r['node']}: {done}", highlight=False)
    if any(r["error"] for r in results):
        raise typer.Exit(c.DOMAIN_ERROR)


def _change_one(
    session: Session,
    pool: clusters.AdapterPool,
    cluster: str,
    node: Node,
    action: str,
    reason: str,
    dry_run: bool,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "cluster": cluster,
        "node": node.name,
        "action": action,
        "reason": reason,
        "was": node.state,
        "dry_run": dry_run,
        "error": "",
    }
    if dry_run:
        return result
    try:
        if action == "drain":
            validation.drain_node(session, pool, c.ADMIN, cluster, node.name, reason)
        else:
            force = bool(reason)  # a resume with a reason may override a degraded verdict
            validation.resume_node(
                session, pool, c.ADMIN, cluster, node.name, force=force, reason=reason
            )
    except (sa_.SchedulerError, BrokerError) as exc:
        result["error"] = str(exc).strip()
    return result


@nodes_app.command("drain")
def nodes_drain(
    cluster: ClusterArg,
    nodes: NodesArg,
    reason: Annotated[str, typer.Option(help="Why (kept by the scheduler).")],
    dry_run: c.DryRunOpt = False,
    as_json: c.JsonOpt = False,
) -> None:
    """Drain nodes: running jobs finish, no new ones start there."""
    if not reason.strip():
        c.fail("--reason must not be empty", c.USAGE_ERROR)
    _change_nodes(cluster, nodes, "drain", reason, dry_run, as_json)


@nodes_app.command("resume")
def nodes_resume(
    cluster: ClusterArg,
    nodes: NodesArg,
    force: Annotated[
        bool,
        typer.Option("--force", help="Also a degraded node (needs --reason; audited)."),
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (required with --force).")] = "",
    dry_run: c.DryRunOpt = False,
    as_json: c.JsonOpt = False,
) -> None:
    """Return drained nodes to service; a degraded one after a passing validation run,
    or now with --force --reason (the reason is audited)."""
    if force and not reason.strip():
        c.fail("--force needs --reason: say why the node returns to service", c.USAGE_ERROR)
    _change_nodes(cluster, nodes, "resume", reason.strip() if force else "", dry_run, as_json)
