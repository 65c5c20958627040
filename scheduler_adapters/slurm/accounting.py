"""Slurm accounting through ``sacctmgr``: accounts, user associations and billing limits.

The broker describes what it wants (``AccountSpec``: an account on a cluster, its
users, its budget and capacity); ``SlurmAccounting.plan`` compares that with what
slurmdbd holds and returns the ``Action`` list that closes the gap; ``apply`` runs it;
``sync(dry_run=True)`` only returns the plan. Nothing is ever deleted: accounts and
users the broker no longer wants are left for an administrator.

Billing unit. Every partition's ``TRESBillingWeights`` makes one *billing* unit equal
to 1 GFLOP/s of rated node speed for a whole node (``CPU=<rate in GFLOP/s / CPUs per
node>``; see ``billing_weights``). Slurm then counts TRES billing minutes in GFLOP/s-
minutes, so a budget of *P* PFlop·h is ``GrpTRESMins=billing=P * 6e7``
(``pfh_to_billing_minutes``) and a capacity cap of *C* PFLOP/s is
``GrpTRES=billing=C * 1e6`` (``pflops_to_billing``).

Over-limit jobs are accepted by Slurm and stay PENDING with reason
``AssocGrpBillingMinutes`` / ``AssocGrpBillingRunMinutes`` (22.05, checked).

A blocked account (``AccountSpec.blocked``: a suspended enterprise, a closed project)
gets ``GrpSubmitJobs=0``: ``sbatch`` under it, or under any account below it, is refused
at submission ("AssocGrpSubmitJobsLimit", 22.05, checked); unblocking sets it back to
``-1``. ``reset_usage`` adds ``RawUsage=0`` (the start of a budget period), so that
``GrpTRESMins`` counts the period's usage only.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal

from ..errors import AdapterConfigError, SchedulerError, SchedulerUnavailable
from .common import check_slurm_conf, is_transient
from .script import DEFAULT_PATH

__all__ = [
    "BILLING_MINUTES_PER_PFH",
    "BILLING_PER_PFLOPS",
    "AccountSpec",
    "Action",
    "Association",
    "SlurmAccounting",
    "billing_weights",
    "pfh_to_billing_minutes",
    "pflops_to_billing",
]

log = logging.getLogger(__name__)

#: GFLOP/s-minutes in one PFlop·h (1e6 GFLOP/s for 60 minutes).
BILLING_MINUTES_PER_PFH = 60_000_000
#: Billing units (GFLOP/s) in one PFLOP/s.
BILLING_PER_PFLOPS = 1_000_000


def pfh_to_billing_minutes(amount_pfh: Decimal | int | str) -> int:
    """A PFlop·h budget as TRES billing minutes, rounded down (never over-grant)."""
    return int((Decimal(amount_pfh) * BILLING_MINUTES_PER_PFH).to_integral_value(ROUND_FLOOR))


def pflops_to_billing(capacity_pflops: Decimal | int | str) -> int:
    """A PFLOP/s capacity cap as a TRES billing count, rounded down."""
    return int((Decimal(capacity_pflops) * BILLING_PER_PFLOPS).to_integral_value(ROUND_FLOOR))


def billing_weights(
    rate_tflops: Decimal | float | str,
    cpus_per_node: int,
    gpus_per_node: int = 0,
    gpu_rate_tflops: Decimal | float | str = 0,
) -> str:
    """``TRESBillingWeights`` making a whole node bill its rate in GFLOP/s.

    A GPU node's rate (``rate_tflops``, CPUs and GPUs together) is split: each GPU bills
    ``gpu_rate_tflops`` (``GRES/gpu=``), the CPUs the rest, so a whole node still bills
    its rate and a job holding part of a shared node bills its CPUs and GPUs.

    >>> billing_weights("0.05", 2)
    'CPU=25'
    >>> billing_weights("1.05", 2, 2, "0.5")
    'CPU=25,GRES/gpu=500'
    """
    if cpus_per_node < 1:
        raise ValueError("cpus_per_node: must be at least 1")
    if gpus_per_node < 0:
        raise ValueError("gpus_per_node: must be 0 or more")
    gpu = Decimal(str(gpu_rate_tflops)) * 1000 if gpus_per_node else Decimal(0)
    cpus = Decimal(str(rate_tflops)) * 1000 - gpu * gpus_per_node
    if gpu < 0 or cpus < 0:
        raise ValueError("gpu_rate_tflops: the GPUs' rates exceed the node's rate")
    weights = f"CPU={(cpus / cpus_per_node).normalize():f}"
    return f"{weights},GRES/gpu={gpu.normalize():f}" if gpus_per_node else weights


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """What the broker wants for one account on one cluster.

    ``billing_minutes`` / ``billing_capacity``: ``GrpTRESMins=billing=`` and
    ``GrpTRES=billing=``; ``None`` means no limit (an existing one is cleared).
    ``blocked``: no job may be submitted under the account (``GrpSubmitJobs=0``).
    ``reset_usage``: zero the account's accrued usage (``RawUsage=0``) first.
    """

    cluster: str
    account: str
    users: tuple[str, ...] = ()
    parent: str = "root"
    billing_minutes: int | None = None
    billing_capacity: int | None = None
    description: str | None = None
    blocked: bool = False
    reset_usage: bool = False


@dataclass(frozen=True, slots=True)
class Association:
    """One row of ``sacctmgr show assoc`` (``user`` is ``None`` for the account row)."""

    cluster: str
    account: str
    user: str | None = None
    parent: str | None = None
    grp_tres_mins: dict[str, int] = field(default_factory=dict)
    grp_tres: dict[str, int] = field(default_factory=dict)
    grp_submit_jobs: int | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """One change: ``summary`` for people, ``argv`` for ``tool`` (sacctmgr runs with ``-i``)."""

    summary: str
    argv: tuple[str, ...]
    tool: str = "sacctmgr"


def _tres(text: str) -> dict[str, int]:
    out = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name and value.lstrip("-").isdigit():
            out[name] = int(value)
    return out


def _limit(value: int | None) -> str:
    return "-1" if value is None else str(value)


class SlurmAccounting:
    """``sacctmgr`` for one cluster, reached through ``slurm_conf``'s slurmdbd."""

    def __init__(
        self,
        cluster: str,
        *,
        slurm_conf: str | None = None,
        bin_dir: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.cluster = cluster
        self.slurm_conf = slurm_conf
        self.bin_dir = bin_dir
        self.timeout_s = timeout_s

    def _tool(self, tool: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        path = (
            os.path.join(self.bin_dir, tool)
            if self.bin_dir
            else (shutil.which(tool) or shutil.which(tool, path=DEFAULT_PATH))
        )
        if not path:
            raise AdapterConfigError(f"{tool} not found on PATH", cluster=self.cluster)
        check_slurm_conf(self.slurm_conf, self.cluster)
        env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        try:
            return subprocess.run(
                [path, *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SchedulerUnavailable(f"{tool} timed out", cluster=self.cluster) from exc

    def _run(self, args: Sequence[str], tool: str = "sacctmgr") -> str:
        proc = self._tool(tool, args)
        text = proc.stderr.strip() or proc.stdout.strip()
        # `sacctmgr -i add` of something that exists exits 1 with "Nothing new added".
        if proc.returncode != 0 and "nothing new added" not in text.lower():
            cls = SchedulerUnavailable if is_transient(text) else SchedulerError
            raise cls(f"{tool} {' '.join(args[:3])}: {text}", cluster=self.cluster)
        return proc.stdout

    def associations(self, accounts: Iterable[str] = ()) -> list[Association]:
        """The cluster's associations, or only those of ``accounts``."""
        where = ["where", f"cluster={self.cluster}"]
        names = ",".join(accounts)
        if names:
            where.append(f"account={names}")
        out = self._run(
            [
                "-nP",
                "show",
                "assoc",
                *where,
                "format=cluster,account,user,parentname,grptresmins,grptres,grpsubmit",
            ]
        )
        rows = []
        for line in out.splitlines():
            fields = line.split("|")
            if len(fields) < 6:
                continue
            cluster, account, user, parent, mins, tres = fields[:6]
            submit = fields[6] if len(fields) > 6 else ""
            rows.append(
                Association(
                    cluster,
                    account,
                    user or None,
                    parent or None,
                    _tres(mins),
                    _tres(tres),
                    int(submit) if submit.lstrip("-").isdigit() else None,
                )
            )
        return rows

    def plan(self, desired: Sequence[AccountSpec]) -> list[Action]:
        """The actions that make slurmdbd match ``desired`` (empty when it already does)."""
        for spec in desired:
            if spec.cluster != self.cluster:
                raise ValueError(f"{spec.account}: spec for {spec.cluster}, not {self.cluster}")
        current = self.associations([s.account for s in desired]) if desired else []
        accounts = {a.account: a for a in current if a.user is None}
        users = {(a.account, a.user) for a in current if a.user}
        actions: list[Action] = []
        for spec in desired:
            have = accounts.get(spec.account)
            if have is None:
                argv = [
                    "add",
                    "account",
                    spec.account,
                    f"cluster={self.cluster}",
                    f"parent={spec.parent}",
                ]
                if spec.description:
                    argv.append(f"description={spec.description}")
                actions.append(Action(f"add account {spec.account} on {self.cluster}", tuple(argv)))
            actions += [
                Action(
                    f"add user {user} to {spec.account} on {self.cluster}",
                    ("add", "user", user, f"account={spec.account}", f"cluster={self.cluster}"),
                )
                for user in spec.users
                if (spec.account, user) not in users
            ]
            actions += self._limit_actions(spec, have)
        return actions

    def _limit_actions(self, spec: AccountSpec, have: Association | None) -> list[Action]:
        now_mins = have.grp_tres_mins.get("billing") if have else None
        now_tres = have.grp_tres.get("billing") if have else None
        now_blocked = have is not None and have.grp_submit_jobs == 0
        where = ("modify", "account", "where", f"name={spec.account}", f"cluster={self.cluster}")
        actions = []
        if spec.reset_usage and have is not None:  # a new account has no usage to reset
            actions.append(
                Action(
                    f"reset usage of {spec.account} on {self.cluster} (new budget period)",
                    (*where, "set", "RawUsage=0"),
                )
            )
        sets = []
        if now_mins != spec.billing_minutes:
            sets.append(f"GrpTRESMins=billing={_limit(spec.billing_minutes)}")
        if now_tres != spec.billing_capacity:
            sets.append(f"GrpTRES=billing={_limit(spec.billing_capacity)}")
        if now_blocked != spec.blocked:
            sets.append(f"GrpSubmitJobs={0 if spec.blocked else -1}")
        if sets:
            summary = (
                f"set {spec.account} on {self.cluster}: "
                f"GrpTRESMins billing {now_mins} -> {spec.billing_minutes}, "
                f"GrpTRES billing {now_tres} -> {spec.billing_capacity}"
            )
            if now_blocked != spec.blocked:
                summary += ", " + ("blocked" if spec.blocked else "unblocked")
            actions.append(Action(summary, (*where, "set", *sets)))
        return actions

    def apply(self, actions: Iterable[Action]) -> None:
        """Run the actions in order; stop at the first failure (a later sync resumes)."""
        for action in actions:
            log.info("%s: %s", action.tool, action.summary)
            prefix = ["-i"] if action.tool == "sacctmgr" else []
            self._run([*prefix, *action.argv], tool=action.tool)

    def sync(self, desired: Sequence[AccountSpec], *, dry_run: bool = False) -> list[Action]:
        """Plan, and unless ``dry_run`` apply; return the plan either way."""
        actions = self.plan(desired)
        if not dry_run:
            self.apply(actions)
        return actions

    def partition_weights(self, partition: str) -> str | None:
        """The partition's current ``TRESBillingWeights`` (None when unset)."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", partition):
            raise SchedulerError(f"invalid partition name {partition!r}", cluster=self.cluster)
        out = self._run(["show", "partition", partition, "-o"], tool="scontrol")
        for item in out.split():
            if item.startswith("TRESBillingWeights="):
                return item.split("=", 1)[1] or None
        return None

    def plan_weights(self, desired: Mapping[str, str]) -> list[Action]:
        """``scontrol update`` actions for partitions whose billing weights differ."""
        actions = []
        for partition, weights in sorted(desired.items()):
            if self.partition_weights(partition) != weights:
                actions.append(
                    Action(
                        f"set {partition} on {self.cluster}: TRESBillingWeights={weights}",
                        ("update", f"PartitionName={partition}", f"TRESBillingWeights={weights}"),
                        tool="scontrol",
                    )
                )
        return actions

    def usage_billing_minutes(self, account: str) -> int | None:
        """Billing minutes the account has used, as Slurm counts it against GrpTRESMins."""
        return self.usages_billing_minutes([account]).get(account)

    def usages_billing_minutes(self, accounts: Sequence[str]) -> dict[str, int]:
        """``usage_billing_minutes`` of several accounts in one ``sshare`` call (accounts
        Slurm does not know yet are absent)."""
        if not accounts:
            return {}
        out = self._run(
            ["-nP", "-A", ",".join(accounts), "-M", self.cluster, "-o", "Account,User,GrpTRESRaw"],
            tool="sshare",
        )
        found = {}
        for line in out.splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) >= 3 and fields[0] in accounts and not fields[1]:
                used = _tres(fields[2]).get("billing")
                if used is not None:
                    found[fields[0]] = used
        return found
