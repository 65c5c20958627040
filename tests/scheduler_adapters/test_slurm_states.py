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
        ("OOM", JobState.FAILED),
        ("DEADLINE", JobState.TIMEOUT),
    ],
)
def test_flags_and_spellings(native: str | list[str], expected: JobState) -> None:
    assert map_state(native) is expected


def test_unknown_state_is_unknown_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scheduler_adapters.slurm.states"):
        assert map_state("TELEPORTED_TO_MARS") is JobState.UNKNOWN
        assert map_state([]) is JobState.UNKNOWN
    assert "TELEPORTED_TO_MARS" in caplog.text


@given(st.one_of(st.text(), st.lists(st.text(), max_size=4)))
def test_map_state_never_raises(native: str | list[str]) -> None:
    assert isinstance(map_state(native), JobState)
