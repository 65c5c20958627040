"""The one table from Slurm job states to ``JobState``: every base state and every flag.

Slurm reports a job's state as a base state plus flags. 22.05 prints one string (a flag
such as ``COMPLETING`` hides the base state; sacct adds ``CANCELLED by <uid>``); 24.05+
sends a list such as ``["COMPLETED", "COMPLETING"]``; ``squeue -t`` and ``sacct -s`` take
short codes (``PD``, ``CG``...). ``map_state`` accepts all of these.

Rules, applied in order:

1. An *overriding* flag decides, whatever the base state: a job still completing or
   staging out holds its nodes (RUNNING, so the broker waits for final accounting); a
   requeued or held-for-requeue job will run again (PENDING); a revoked federated
   sibling is gone (CANCELLED); a stopped job is SUSPENDED; a job whose nodes are still
   booting is PENDING.
2. Otherwise the base state decides.
3. A job reported by a non-overriding flag alone (22.05 strings) maps to that flag's
   fallback.
4. A name in no table maps to ``UNKNOWN`` and is logged once; it never raises (a
   newer Slurm must not crash the poller; psij-python's ``assert`` is the counter-example).

The end states say whose end it was: the job's own (``COMPLETED``, ``FAILED``,
``OUT_OF_MEMORY``, ``TIMEOUT``, ``CANCELLED``) or the center's (``NODE_FAIL``,
``BOOT_FAIL``, ``PREEMPTED``), each visible as such. A requeued job is ``PENDING``
again under the same id (22.05's squeue prints plain ``PENDING`` then, with
``restart_cnt`` counting the requeues; 24.05+ adds the ``REQUEUED`` flag), so a node
failure or preemption that Slurm answers with a requeue is never an end. Accounting
keeps one record per run (``sacct --duplicates``): ``run_state`` reads how an earlier
run ended.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..base import JobState

__all__ = [
    "BASE_STATES",
    "FLAG_FALLBACKS",
    "OVERRIDING_FLAGS",
    "SHORT_CODES",
    "map_state",
    "run_state",
]

log = logging.getLogger(__name__)

#: Base states (``enum job_states`` in slurm.h), with their meaning for the broker.
BASE_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "SUSPENDED": JobState.SUSPENDED,
    "COMPLETED": JobState.COMPLETED,
    "CANCELLED": JobState.CANCELLED,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT,
    # A node of the job failed (or an admin set it down) and the job was not requeued.
    "NODE_FAIL": JobState.NODE_FAIL,
    # Preempted for another job and not requeued: it did not finish its work.
    "PREEMPTED": JobState.PREEMPTED,
    # Its nodes failed to boot (power saving, cloud nodes, reboot=...).
    "BOOT_FAIL": JobState.BOOT_FAIL,
    # The job's --deadline passed before it could finish: it ran out of time.
    "DEADLINE": JobState.TIMEOUT,
    # The job used more memory than it asked for (cgroup OOM kill).
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
}

#: Flags that decide the state whatever the base state says (rule 1), in priority order.
OVERRIDING_FLAGS: dict[str, JobState] = {
    "REVOKED": JobState.CANCELLED,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "SPECIAL_EXIT": JobState.PENDING,
    "COMPLETING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "STOPPED": JobState.SUSPENDED,
    "CONFIGURING": JobState.PENDING,
    "POWER_UP_NODE": JobState.PENDING,
}

#: Flags that leave the base state in charge, with what they mean when seen alone.
FLAG_FALLBACKS: dict[str, JobState] = {
    "LAUNCH_FAILED": JobState.FAILED,
    "RECONFIG_FAIL": JobState.FAILED,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "UPDATE_DB": JobState.UNKNOWN,
    "EXPEDITING": JobState.PENDING,
}

#: Short codes (``squeue -o %t``, ``sacct -s``) and aliases, to their long names.
SHORT_CODES: dict[str, str] = {
    "PD": "PENDING",
    "R": "RUNNING",
    "S": "SUSPENDED",
    "CD": "COMPLETED",
    "CA": "CANCELLED",
    "F": "FAILED",
    "TO": "TIMEOUT",
    "NF": "NODE_FAIL",
    "PR": "PREEMPTED",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "OOM": "OUT_OF_MEMORY",
    "CG": "COMPLETING",
    "CF": "CONFIGURING",
    "RD": "RESV_DEL_HOLD",
    "RF": "REQUEUE_FED",
    "RH": "REQUEUE_HOLD",
    "RQ": "REQUEUED",
    "RS": "RESIZING",
    "RV": "REVOKED",
    "SI": "SIGNALING",
    "SE": "SPECIAL_EXIT",
    "SO": "STAGE_OUT",
    "ST": "STOPPED",
    "LF": "LAUNCH_FAILED",
    "UD": "UPDATE_DB",
    "PU": "POWER_UP_NODE",
    # Spellings seen in the wild: slurm.h's JOB_COMPLETE, the JOB_ prefix, OOM's long form.
    "COMPLETE": "COMPLETED",
    "REQUEUE": "REQUEUED",
    "OOM_KILL": "OUT_OF_MEMORY",
}

_warned: set[str] = set()


def _normalise(name: str) -> str:
    # sacct prints "CANCELLED by 1000"; JSON may use lower case or a JOB_ prefix.
    word = name.strip().split(" ", 1)[0].upper().removeprefix("JOB_")
    return SHORT_CODES.get(word, word)


def map_state(native: str | Iterable[str]) -> JobState:
    """Map Slurm's state (a string or a list of base state and flags) to a ``JobState``."""
    names = [native] if isinstance(native, str) else list(native)
    words = [_normalise(n) for n in names if n and n.strip()]
    for flag, state in OVERRIDING_FLAGS.items():
        if flag in words:
            return state
    for word in words:
        if word in BASE_STATES:
            return BASE_STATES[word]
    for word in words:
        if word in FLAG_FALLBACKS:
            return FLAG_FALLBACKS[word]
    key = "+".join(words) or "<empty>"
    if key not in _warned:
        _warned.add(key)
        log.warning("unknown Slurm job state %r: reporting it as unknown", key)
    return JobState.UNKNOWN


def run_state(native: str | Iterable[str]) -> JobState:
    """How an earlier run of a requeued job ended, from its accounting record.

    Its base state decides, whatever the flags (``["NODE_FAIL", "REQUEUED"]`` is a run
    ended by a node failure); a record without one maps as ``map_state`` does (22.05
    records a run ended by ``scontrol requeue`` as plain ``REQUEUED``: ``PENDING``).
    """
    names = [native] if isinstance(native, str) else list(native)
    words = [_normalise(n) for n in names if n and n.strip()]
    for word in words:
        if word in BASE_STATES:
            return BASE_STATES[word]
    return map_state(words)
