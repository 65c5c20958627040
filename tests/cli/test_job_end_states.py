"""brokerctl jobs list --state takes the new end states; show prints the native state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import scheduler_adapters as sa_
from broker.db import make_engine, make_session_factory, session_scope
from broker.models import Job
from broker.services import scheduling

from .conftest import Cli


def test_jobs_list_filters_by_the_new_end_states(cli: Cli) -> None:
    seeded = cli.seed(jobs_n=1)
    (job_id,) = seeded["jobs"]
    engine = make_engine(cli.url)
    now = datetime.now(UTC)
    try:
        with session_scope(make_session_factory(engine)) as s:
            row = s.get(Job, uuid.UUID(job_id))
            assert row is not None
            scheduling.mark_submitted(row, "7", now)
            info = sa_.JobInfo(
                job_id="7",
                state=sa_.JobState.PREEMPTED,
                native_state="PREEMPTED",
                nodes=("local1",),
                start_time=now - timedelta(minutes=1),
                end_time=now,
                elapsed_s=60,
            )
            scheduling.apply_info(s, row, info, now)
    finally:
        engine.dispose()
    listed = cli.json("jobs", "list", "--state", "preempted")
    assert [j["id"] for j in listed] == [job_id] and listed[0]["state"] == "preempted"
    for state in ("node_fail", "boot_fail", "out_of_memory"):
        assert cli.json("jobs", "list", "--state", state) == []
    shown = cli.json("jobs", "show", job_id)
    assert shown["native_state"] == "PREEMPTED" and "preempted" in shown["reason"]
    assert shown["charge_pfh"] == 0  # the center's failure, not charged by default
    assert "PREEMPTED" in cli.run("jobs", "show", job_id).stdout
