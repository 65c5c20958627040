"""The state table: every Slurm state name maps somewhere, unknown names never raise."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_adapters import JobState
from scheduler_adapters.slurm import states
from scheduler_adapters.slurm.states import map_state

ALL_NAMES = [*states.BASE_STATES, *states.OVERRIDING_FLAGS, *states.FLAG_FALLBACKS]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_long_name_is_known(name: str) -> None:
    expected = {**states.FLAG_FALLBACKS, **states.BASE_STATES, **states.OVERRIDING_FLAGS}[name]
    assert map_state(name) is expected
    assert map_state([name]) is expected
    assert map_state(name.lower()) is expected


@pytest.mark.parametrize("code", sorted(states.SHORT_CODES))
def test_every_short_code_maps_like_its_long_name(code: str) -> None:
    assert map_state(code) is map_state(states.SHORT_CODES[code])


def test_slurm_h_base_states_are_all_in_the_table() -> None:
    # enum job_states in slurm.h (JOB_PENDING .. JOB_OOM); JOB_END is a sentinel.
    slurm_h = {
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
    assert set(states.BASE_STATES) == slurm_h


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        (["COMPLETED", "COMPLETING"], JobState.RUNNING),  # epilog still running
        (["FAILED", "COMPLETING"], JobState.RUNNING),
        (["PENDING", "REQUEUED"], JobState.PENDING),
        (["RUNNING", "CONFIGURING"], JobState.PENDING),
        (["RUNNING", "SIGNALING"], JobState.RUNNING),
        (["FAILED", "LAUNCH_FAILED"], JobState.FAILED),
        (["CANCELLED", "REVOKED"], JobState.CANCELLED),
        (["RUNNING", "STOPPED"], JobState.SUSPENDED),
        ("CANCELLED by 1000", JobState.CANCELLED),  # sacct's text
        ("COMPLETING", JobState.RUNNING),  # 22.05 string hides the base state
        ("JOB_COMPLETE", JobState.COMPLETED),
        ("OOM", JobState.OUT_OF_MEMORY),
        ("DEADLINE", JobState.TIMEOUT),
    ],
)
def test_flags_and_spellings(native: str | list[str], expected: JobState) -> None:
    assert map_state(native) is expected


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        # 22.05 strings (squeue job_state, sacct state.current) and short codes
        ("NODE_FAIL", JobState.NODE_FAIL),
        ("NF", JobState.NODE_FAIL),
        ("BOOT_FAIL", JobState.BOOT_FAIL),
        ("BF", JobState.BOOT_FAIL),
        ("PREEMPTED", JobState.PREEMPTED),
        ("PR", JobState.PREEMPTED),
        ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
        ("OOM_KILL", JobState.OUT_OF_MEMORY),
        # 24.05+ lists
        (["NODE_FAIL"], JobState.NODE_FAIL),
        (["BOOT_FAIL"], JobState.BOOT_FAIL),
        (["PREEMPTED"], JobState.PREEMPTED),
        (["OUT_OF_MEMORY"], JobState.OUT_OF_MEMORY),
        (["FAILED", "LAUNCH_FAILED"], JobState.FAILED),
        # Requeued: the same job runs again, so none of these is an end.
        ("REQUEUED", JobState.PENDING),  # 22.05: the flag hides the base state
        (["NODE_FAIL", "REQUEUED"], JobState.PENDING),
        (["PREEMPTED", "REQUEUED"], JobState.PENDING),
        (["BOOT_FAIL", "REQUEUED"], JobState.PENDING),
        (["PENDING", "COMPLETING", "REQUEUED"], JobState.PENDING),
        (["PENDING", "REQUEUE_HOLD"], JobState.PENDING),
        # Still completing on its nodes: not settled until the epilog is done.
        (["NODE_FAIL", "COMPLETING"], JobState.RUNNING),
        (["OUT_OF_MEMORY", "COMPLETING"], JobState.RUNNING),
    ],
)
def test_end_states_are_visible_as_such_and_requeues_are_not_ends(
    native: str | list[str], expected: JobState
) -> None:
    assert map_state(native) is expected


def test_every_end_state_is_terminal_and_only_those() -> None:
    ends = {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.BOOT_FAIL,
        JobState.PREEMPTED,
        JobState.OUT_OF_MEMORY,
    }
    assert {s for s in JobState if s.terminal} == ends
    # Every terminal JobState is reachable from some Slurm base state.
    assert ends <= set(states.BASE_STATES.values())


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        ("NODE_FAIL", JobState.NODE_FAIL),
        (["NODE_FAIL", "REQUEUED"], JobState.NODE_FAIL),
        (["PREEMPTED", "REQUEUED"], JobState.PREEMPTED),
        ("PR", JobState.PREEMPTED),
        (["BOOT_FAIL"], JobState.BOOT_FAIL),
        ("REQUEUED", JobState.PENDING),  # 22.05's record of a run ended by scontrol requeue
        (["PENDING", "REQUEUED"], JobState.PENDING),
        (["COMPLETED"], JobState.COMPLETED),
        ("BEAMED_UP", JobState.UNKNOWN),
    ],
)
def test_run_state_reads_how_an_earlier_run_ended(
    native: str | list[str], expected: JobState
) -> None:
    assert states.run_state(native) is expected


def test_unknown_state_is_unknown_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scheduler_adapters.slurm.states"):
        assert map_state("TELEPORTED_TO_MARS") is JobState.UNKNOWN
        assert map_state([]) is JobState.UNKNOWN
    assert "TELEPORTED_TO_MARS" in caplog.text


@given(st.one_of(st.text(), st.lists(st.text(), max_size=4)))
def test_map_state_never_raises(native: str | list[str]) -> None:
    assert isinstance(map_state(native), JobState)
    assert isinstance(states.run_state(native), JobState)
