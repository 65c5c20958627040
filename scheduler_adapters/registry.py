"""Build an adapter from its configuration: one exhaustive match, lazy imports.

Lazy imports keep optional dependencies optional: ``pyslurm`` is imported only when a
cluster is configured with ``kind = "pyslurm"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import SchedulerAdapter
from .errors import AdapterConfigError
from .slurm.accounting import SlurmAccounting

__all__ = ["ADAPTER_KINDS", "create_accounting", "create_adapter"]

ADAPTER_KINDS = ("local", "slurm-cli", "slurmrestd", "pyslurm")


def create_adapter(
    kind: str, cluster: str, options: Mapping[str, Any] | None = None
) -> SchedulerAdapter:
    """Return the adapter of ``kind`` for ``cluster``, configured by ``options``."""
    opts = dict(options or {})
    try:
        match kind:
            case "local":
                from .local import LocalAdapter

                return LocalAdapter(cluster, **opts)
            case "slurm-cli":
                from .slurm.cli import SlurmCliAdapter

                return SlurmCliAdapter(cluster, **opts)
            case "slurmrestd":
                from .slurm.rest import SlurmRestAdapter

                return SlurmRestAdapter(cluster, **opts)
            case "pyslurm":
                from .slurm.pyslurm import PySlurmAdapter

                return PySlurmAdapter(cluster, **opts)
            case _:
                raise AdapterConfigError(
                    f"unknown adapter kind {kind!r}; expected one of {', '.join(ADAPTER_KINDS)}",
                    cluster=cluster,
                )
    except TypeError as exc:  # unexpected or missing option names
        raise AdapterConfigError(f"bad options for {kind} adapter: {exc}", cluster=cluster) from exc


def create_accounting(
    kind: str, cluster: str, options: Mapping[str, Any] | None = None
) -> SlurmAccounting | None:
    """The accounting (sacctmgr) handle of a Slurm cluster, or None for other schedulers.

    It needs the cluster's ``slurm_conf`` (and optional ``bin_dir``) from its options;
    associations are made on ``slurm_cluster`` where the broker's name differs.
    """
    opts = dict(options or {})
    if kind not in ("slurm-cli", "slurmrestd", "pyslurm") or not opts.get("slurm_conf"):
        return None
    return SlurmAccounting(
        opts.get("slurm_cluster") or cluster,
        slurm_conf=opts["slurm_conf"],
        bin_dir=opts.get("bin_dir"),
    )
