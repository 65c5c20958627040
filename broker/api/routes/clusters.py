"""Clusters and their nodes."""

from __future__ import annotations

from fastapi import APIRouter

from ...schemas.clusters import ClusterRead, NodeRead
from ...services import clusters
from .. import views
from ..deps import CurrentPrincipal, SessionDep

router = APIRouter(prefix="/clusters", tags=["clusters"])


@router.get("")
def list_clusters(session: SessionDep, me: CurrentPrincipal) -> list[ClusterRead]:
    return [
        views.cluster(c, clusters.partitions_of(session, c))
        for c in clusters.list_clusters(session)
    ]


@router.get("/{name}/nodes")
def list_nodes(name: str, session: SessionDep, me: CurrentPrincipal) -> list[NodeRead]:
    cluster = clusters.get_cluster(session, name)
    rated = {p.name: p.rated_mflops for p in clusters.partitions_of(session, cluster)}
    default = max(rated.values(), default=0)
    return [
        views.node(n, next((rated[p] for p in n.partitions if p in rated), default))
        for n in clusters.list_nodes(session, name)
    ]
