"""Clusters and their nodes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from ...schemas.clusters import ClusterRead, NodeRateRead, NodeRead
from ...schemas.common import NO_NUL
from ...services import clusters, reports, validation
from .. import views
from ..deps import CurrentPrincipal, SessionDep

router = APIRouter(prefix="/clusters", tags=["clusters"])
#: A cluster's or a node's name in a path (NUL: 422, not PostgreSQL's error).
Name = Annotated[str, Path(max_length=200, pattern=NO_NUL)]


@router.get("")
def list_clusters(session: SessionDep, me: CurrentPrincipal) -> list[ClusterRead]:
    return [
        views.cluster(c, clusters.partitions_of(session, c))
        for c in clusters.list_clusters(session)
    ]


@router.get("/{name}/nodes")
def list_nodes(name: Name, session: SessionDep, me: CurrentPrincipal) -> list[NodeRead]:
    cluster = clusters.get_cluster(session, name)
    rated = {p.name: p.rated_mflops for p in clusters.partitions_of(session, cluster)}
    default = max(rated.values(), default=0)
    nodes = clusters.list_nodes(session, name)
    gpus = reports.latest_gpus(session, [n.id for n in nodes if n.gpus or n.gpu_mflops])
    return [
        views.node(
            n, next((rated[p] for p in n.partitions if p in rated), default), gpus.get(n.id, [])
        )
        for n in nodes
    ]


@router.get("/{name}/nodes/{node}/rates")
def node_rates(
    name: Name, node: Name, session: SessionDep, me: CurrentPrincipal, limit: int = 50
) -> list[NodeRateRead]:
    """The node's billing rate versions, newest first: CPU rate + each GPU's."""
    row = validation.find_node(session, name, node)
    return [views.node_rate(r) for r in reports.node_rates(session, row.id, min(limit, 500))]
