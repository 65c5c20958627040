"""Settings from the environment (prefix ``BROKER_``) and the clusters file.

Nothing here is created at import time: ``Settings()`` is built by the entry points
(``brokerctl``, ``create_app`` callers) and passed down.
"""

from __future__ import annotations

import logging
import os
import pwd
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url

log = logging.getLogger(__name__)


#: A QOS or reservation name as the broker passes it on (it must not read as an option
#: list or a shell word; Slurm's own names fit).
_SLURM_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"


class PartitionConfig(BaseModel):
    """A partition as the center declares it: sizes, limits and the rated node speed."""

    model_config = ConfigDict(extra="forbid")

    name: str
    nodes: int = Field(1, ge=1)
    cpus_per_node: int = Field(1, ge=1)
    memory_mb_per_node: int = Field(1024, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    max_nodes: int | None = Field(None, ge=1)
    max_time_minutes: int = Field(60, ge=1)
    rate_tflops: float = Field(0.05, gt=0)
    price_per_pfh: float = Field(0.0, ge=0)
    features: list[str] = Field(default_factory=list)
    references: dict[str, list[float]] = Field(default_factory=dict)
    # References for `kernels validate --quick` runs (BROKER_VALIDATION_ARGS); without
    # them a quick run is recorded but cannot degrade, drain or credit a node.
    quick_references: dict[str, list[float]] = Field(default_factory=dict)
    # The QOS and reservation names a job spec may ask for here (`qos`, `reservation`);
    # anything else is a 422. Empty: none may be asked for (Slurm's defaults apply).
    allowed_qos: list[Annotated[str, Field(pattern=_SLURM_NAME)]] = Field(default_factory=list)
    allowed_reservations: list[Annotated[str, Field(pattern=_SLURM_NAME)]] = Field(
        default_factory=list
    )
    # The most tasks one job array (`array`) may have here; keep it within the cluster's
    # MaxArraySize (Slurm's default allows indices up to 1000).
    max_array_tasks: int = Field(1000, ge=1, le=1_000_000)
    # GPU nodes. A node's rate is its CPU rate plus each GPU's measured GEMM rate at
    # this precision; the GPUs are validated against ``gpu_references`` (per GPU:
    # dgemm_gflops, sgemm_gflops, triad_gbs, peak_gflops), or ``gpu_quick_references``
    # for quick runs. ``rate_tflops`` is then the whole node's rated value (CPU + GPUs).
    gpu_precision: Literal["fp64", "fp32"] = "fp64"
    gpu_references: dict[str, list[float]] = Field(default_factory=dict)
    gpu_quick_references: dict[str, list[float]] = Field(default_factory=dict)
    # Jobs share nodes here (not exclusive): a GPU job that takes part of a node is
    # charged by its share of the node's GPUs. Default: whole nodes, charged whole.
    shared: bool = False
    # This partition's validation runs: `kernels validate` arguments after
    # BROKER_VALIDATION_ARGS (e.g. "--quick --repeat 1"; `--gpu` is added on GPU
    # partitions) and environment (e.g. NUMBA_ENABLE_CUDASIM = "1" for fake GPUs).
    validation_args: str = Field("", max_length=200)
    validation_environment: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")], str
    ] = Field(default_factory=dict)

    @field_validator("gpu_references", "gpu_quick_references")
    @classmethod
    def _known_gpu_metrics(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        known = {"dgemm_gflops", "sgemm_gflops", "triad_gbs", "peak_gflops"}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown GPU metrics {sorted(unknown)} (known: {sorted(known)})")
        return value

    @model_validator(mode="after")
    def _max_nodes_default(self) -> PartitionConfig:
        if self.max_nodes is None:
            self.max_nodes = self.nodes
        return self


class ClusterConfig(BaseModel):
    """One cluster: which adapter reaches it, with which options, and its partitions."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    adapter: Literal["local", "slurm-cli", "slurmrestd", "pyslurm"]
    scratch_dir: Path
    # How job inputs and outputs reach scratch_dir (services.staging): "shared-fs" copies
    # on a filesystem the worker mounts. An SSH/rsync or Globus-style mover adds its kind
    # here, with its options (host, endpoint) in a table beside it.
    mover: Literal["shared-fs"] = "shared-fs"
    options: dict[str, Any] = Field(default_factory=dict)
    partitions: list[PartitionConfig] = Field(min_length=1)

    @field_validator("partitions")
    @classmethod
    def _unique_partitions(cls, value: list[PartitionConfig]) -> list[PartitionConfig]:
        names = [p.name for p in value]
        if len(names) != len(set(names)):
            raise ValueError("partition names must be unique within a cluster")
        return value


class Settings(BaseSettings):
    """Broker settings; every field can be set as ``BROKER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="BROKER_", env_file=None, extra="ignore")

    database_url: str = "sqlite:///./broker.db"
    clusters_file: Path | None = None
    data_dir: Path = Path("./broker-data")
    environment: Literal["development", "production", "test"] = "development"
    # Keys (from a secret store, through the environment); unset: a key file made once
    # under data_dir (broker.keys). session_secret signs dashboard cookies; secrets_key
    # seals webhook signing secrets in the database.
    session_secret: SecretStr | None = None
    secrets_key: SecretStr | None = None

    worker_enabled: bool = True
    worker_interval_s: float = Field(1.0, gt=0)
    submit_batch: int = Field(50, ge=1)
    submit_retry_base_s: float = Field(2.0, gt=0)
    submit_retry_max_s: float = Field(120.0, gt=0)
    # Submitters per cluster in one pass (each enterprise's jobs in order, one at a time):
    # sbatch or a slurmrestd call each, in parallel.
    submit_concurrency: int = Field(4, ge=1, le=64)
    # A live job that neither the controller nor accounting has known for this long is
    # `lost`: its hold is released and an operator resolves it.
    lost_grace_s: float = Field(600.0, gt=0)
    # A cluster whose live jobs did not change at a poll is polled again after twice the
    # previous gap, up to this (a submit or a cancel there polls it at the next pass);
    # 0 polls every cluster at every pass.
    poll_max_interval_s: float = Field(10.0, ge=0)

    max_script_bytes: int = Field(65536, ge=1)
    max_body_bytes: int = Field(262144, ge=1024)
    rate_limit_per_minute: int = Field(600, ge=0)  # per token; 0 disables
    default_rate_tflops: float = Field(0.05, gt=0)
    # Runs ended by the center's own failures (node_fail, boot_fail, preempted, also
    # the runs of a requeued job that ended so): "none" charges nothing for them (the
    # memo and the job's reason say why), "full" charges what ran like any other end.
    charge_center_failures: Literal["none", "full"] = "none"

    # Unauthenticated requests (no credentials, or refused ones) per client address and
    # minute, an IPv6 /64 as one address; counted per API process; 0 disables.
    anon_rate_limit_per_minute: int = Field(120, ge=0)

    # /metrics answers only a request bearing metrics_token or coming from
    # metrics_allow_networks ('[]': the token from everywhere); anything else gets the
    # 404 of an unknown path (README, Configuration).
    metrics_token: SecretStr | None = None
    metrics_allow_networks: list[IPvAnyNetwork] = Field(
        default=["127.0.0.0/8", "::1/128"], validate_default=True
    )

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # BROKER_METRICS_TOKEN= (empty) is unset, never a token to match
        if len(value.get_secret_value().strip()) < 16:
            raise ValueError("at least 16 characters (e.g. `openssl rand -hex 24`)")
        return value

    # Project workspaces (<data_dir>/workspaces/<project id>/), webhooks, job event streams.
    workspace_quota_bytes: int = Field(10 * 1024**3, ge=0)  # per project
    # One job's stage-out (outputs copied into its workspace) may take this long.
    stage_out_timeout_s: float = Field(300.0, gt=0)
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1)
    webhook_retry_base_s: float = Field(2.0, gt=0)
    webhook_retry_max_s: float = Field(600.0, gt=0)
    # Webhooks reach public addresses only (no SSRF into the center's own network:
    # slurmrestd, PostgreSQL, metadata services), except in these networks, e.g.
    # BROKER_WEBHOOK_ALLOW_NETWORKS='["10.20.0.0/16"]' for an internal receiver.
    webhook_allow_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    events_poll_s: float = Field(0.5, gt=0)
    events_max_duration_s: float = Field(600.0, gt=0)
    # Open event streams (GET /jobs/{id}/events) per token and API process; more: 429.
    sse_max_streams_per_token: int = Field(4, ge=1)

    # The tenant boundary (DESIGN.md, Security). An enterprise's POSIX user must not be
    # a system account: on this host, its uid is at least this.
    min_tenant_uid: int = Field(1000, ge=1)
    # The local adapter run by another user than root runs every job as that user (a
    # single-user trial): refused with PostgreSQL, a deployment for several tenants,
    # unless this allows it (see check_job_identity).
    allow_shared_user: bool = False

    # Brokering: seconds of turnaround one unit of each term is worth (see brokering).
    routing_weight_wait: float = Field(1.0, ge=0)
    routing_weight_run: float = Field(1.0, ge=0)
    routing_weight_price: float = Field(0.0, ge=0)
    # CPU-only jobs stay off GPU partitions unless no other partition can run them.
    routing_cpu_jobs_off_gpu: bool = True
    reroute_on_reject: bool = True  # once, to another cluster, when one refuses a job

    # Node validation: the kernels run as jobs under a broker-owned account and user.
    validation_account: str = "hcb_validation"
    validation_user: str = "hcbvalidator"
    validation_python: str = ""  # interpreter with the kernels installed; default: ours
    validation_args: str = ""  # extra `kernels validate` arguments, e.g. "--quick"
    validation_time_limit_minutes: int = Field(15, ge=1)
    validation_min_gemm_peak_ratio: float = Field(0.2, ge=0, le=1)
    validation_rate_samples: int = Field(5, ge=1)

    def load_clusters(self) -> list[ClusterConfig]:
        """The clusters file's clusters, or one built-in ``local`` cluster.

        Every process that runs or follows jobs starts here, so this is where the
        shared-user mode is refused or announced (``check_job_identity``).
        """
        if self.clusters_file is None:
            clusters = [default_local_cluster(self.data_dir, self.default_rate_tflops)]
        else:
            clusters = load_clusters_file(self.clusters_file)
        check_job_identity(self, clusters)
        return clusters


class SharedUserRefused(ValueError):
    """The local adapter would run every tenant's job as the broker's own user."""


def local_jobs_run_as(clusters: Iterable[ClusterConfig]) -> str | None:
    """Who the local clusters' jobs run as, in words (``/readyz``); None without one."""
    local = [c for c in clusters if c.adapter == "local"]
    if not local:
        return None
    if os.geteuid() == 0:
        fallbacks = sorted({str(c.options.get("fallback_user", "nobody")) for c in local})
        others = " or ".join(f or "(refused)" for f in fallbacks)
        return f"each job's POSIX user; where it does not exist here: {others}"
    return f"{_user_name()}, the broker's own user, for every job (single-user trial mode)"


def check_job_identity(settings: Settings, clusters: Sequence[ClusterConfig]) -> None:
    """Refuse the shared-user mode on PostgreSQL unless allowed; else log it, once.

    Run as root, the local adapter runs each job as its enterprise's POSIX user (or an
    unprivileged fallback user). Run as anyone else it cannot switch users, so every
    tenant's job runs as the broker itself, able to read the broker's database
    credentials and every other tenant's files: fine for one person trying the broker
    out on SQLite, not for a center.
    """
    if os.geteuid() == 0 or not any(c.adapter == "local" for c in clusters):
        return
    backend = make_url(settings.database_url).get_backend_name()
    if backend == "postgresql" and not settings.allow_shared_user:
        raise SharedUserRefused(
            f"the local adapter would run every job as {_user_name()!r}, the broker's own"
            " user, since the broker does not run as root: refused with PostgreSQL. Run the"
            " broker as root (jobs then run as each enterprise's POSIX user), use Slurm"
            " clusters only, or set BROKER_ALLOW_SHARED_USER=true for a single-user trial."
        )
    global _announced
    if not _announced:
        _announced = True
        log.warning("local jobs run as %s", local_jobs_run_as(clusters))


_announced = False


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def default_local_cluster(data_dir: Path, rate_tflops: float) -> ClusterConfig:
    """The embedded default: jobs run as local processes under ``data_dir``."""
    root = data_dir.resolve()
    return ClusterConfig(
        name="local",
        adapter="local",
        scratch_dir=root / "scratch",
        options={"root_dir": str(root / "local-scheduler"), "node_names": ["local1", "local2"]},
        partitions=[
            PartitionConfig(
                name="default",
                nodes=2,
                cpus_per_node=2,
                memory_mb_per_node=4096,
                max_nodes=2,
                max_time_minutes=24 * 60,
                rate_tflops=rate_tflops,
            )
        ],
    )


def load_clusters_file(path: Path) -> list[ClusterConfig]:
    """Parse a TOML clusters file (``[[clusters]]`` tables)."""
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    clusters = [ClusterConfig.model_validate(c) for c in data.get("clusters", [])]
    if not clusters:
        raise ValueError(f"{path}: no [[clusters]] declared")
    names = [c.name for c in clusters]
    if len(names) != len(set(names)):
        raise ValueError(f"{path}: cluster names must be unique")
    return clusters
