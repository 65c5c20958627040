"""The parsers and the slurmrestd adapter on JSON recorded from Slurm 25.11.7 (gamma).

Recorded by ``tests/fixtures/slurm/record_2511.py``: an ``echo`` job, an ``exit 3`` job
and a job cancelled while running through the CLI, one job through slurmrestd v0.0.44
(data_parser v0.0.44: state lists, ``{set, infinite, number}`` numbers), and errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler_adapters import JobSpec, JobState, SubmitRejected
from scheduler_adapters.slurm import parse
from scheduler_adapters.slurm.cli import SlurmCliAdapter
from scheduler_adapters.slurm.rest import SlurmRestAdapter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm" / "25.11"
IDS = json.loads((FIXTURES / "ids.json").read_text())


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_cli_squeue_sacct_and_nodes() -> None:
    live = parse.parse_jobs(load("squeue.json"), "gamma")
    running = live[IDS["cancelled"]]
    assert running.state is JobState.RUNNING and running.nodes == ("gamma1",)
    assert running.tag == "fixture" and running.start_time is not None
    assert parse.release(load("squeue.json")) == "25.11.7"

    done = parse.parse_jobs(load("sacct.json"), "gamma")
    echo, exit3, cancelled = (done[IDS[k]] for k in ("echo", "exit3", "cancelled"))
    assert echo.state is JobState.COMPLETED and echo.exit_code == 0
    assert exit3.state is JobState.FAILED and exit3.exit_code == 3
    assert cancelled.state is JobState.CANCELLED
    assert echo.account == "fixacct" and echo.user == "brokerfix" and echo.tag == "fixture"
    assert echo.elapsed_s is not None and echo.end_time is not None

    nodes = parse.parse_nodes(load("scontrol_nodes.json"))
    assert [(n.name, n.cpus, n.memory_mb, n.partitions) for n in nodes] == [
        ("gamma1", 2, 2000, ("batch",))
    ]


def test_rest_jobs_nodes_and_ping() -> None:
    jobs = parse.parse_jobs(load("rest_jobs.json"), "gamma")
    assert jobs[IDS["exit3"]].state is JobState.FAILED
    assert jobs[IDS["exit3"]].exit_code == 3
    assert jobs[IDS["rest"]].state is JobState.COMPLETED
    assert parse.parse_nodes(load("rest_nodes.json"))[0].name == "gamma1"
    assert parse.release(load("rest_ping.json")) == "25.11.7"
    assert parse.plugin_version(load("rest_jobs.json")) == "v0.0.44"


def test_rest_slurmdb_records() -> None:
    done = parse.parse_jobs(load("rest_slurmdb_jobs.json"), "gamma")
    assert done[IDS["exit3"]].exit_code == 3 and done[IDS["echo"]].exit_code == 0
    assert done[IDS["cancelled"]].state is JobState.CANCELLED
    assert done[IDS["rest"]].state is JobState.COMPLETED


#: What gamma's slurmrestd (25.11.7) answered to GET /slurm/v0.0.44/jobs?update_time=T
#: when no job had changed since T (seen live; meta left out).
NO_CHANGE = {
    "jobs": [],
    "last_backfill": {"set": True, "infinite": False, "number": 0},
    "last_update": {"set": True, "infinite": False, "number": 0},
    "warnings": [
        {
            "description": "No job changes since update_time[1796420024]=2026-12-04T21:33:44",
            "source": "op_handler_jobs",
        }
    ],
    "errors": [],
}


def replay(seen: list[httpx.Request]) -> httpx.MockTransport:
    def body(name: str) -> httpx.Response:
        doc = load(name)
        if isinstance(doc, dict) and "status" in doc and "body" in doc:
            if isinstance(doc["body"], str):
                return httpx.Response(doc["status"], text=doc["body"])
            return httpx.Response(doc["status"], json=doc["body"])
        return httpx.Response(200, json=doc)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path, method = request.url.path, request.method
        if not path.startswith(("/slurm/v0.0.44/", "/slurmdb/v0.0.44/")):
            return body("rest_unknown_version.json")
        if path.endswith("/ping"):
            return body("rest_ping.json")
        if path == "/slurm/v0.0.44/jobs":
            stamp = request.url.params.get("update_time")
            if stamp is not None and int(stamp) >= load("rest_jobs.json")["last_update"]["number"]:
                return httpx.Response(200, json=NO_CHANGE)
            return body("rest_jobs.json")
        if path == "/slurm/v0.0.44/nodes":
            return body("rest_nodes.json")
        if path.endswith("/job/submit"):
            account = json.loads(request.content)["job"].get("account")
            return body(
                "rest_submit.json" if account == "fixacct" else "rest_submit_bad_account.json"
            )
        if method == "DELETE":
            return body("rest_cancel_unknown.json")
        if path == "/slurmdb/v0.0.44/jobs":
            steps = request.url.params.get_list("step")
            if steps == ["999999"]:
                return body("rest_slurmdb_nothing_found.json")
            if any("," in s for s in steps):  # what 25.11 answers to a comma list
                return httpx.Response(
                    200,
                    json={
                        "jobs": [],
                        "errors": [
                            {"error_number": 9000, "error": "Query empty or not RFC7320 compliant"}
                        ],
                    },
                )
            return body("rest_slurmdb_jobs.json")
        return body("rest_unknown_version.json")

    return httpx.MockTransport(handle)


@pytest.fixture
def rest(tmp_path: Path) -> tuple[SlurmRestAdapter, list[httpx.Request]]:
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    seen: list[httpx.Request] = []
    adapter = SlurmRestAdapter(
        "gamma", url="http://rest.test", jwt_key_file=str(key), transport=replay(seen)
    )
    return adapter, seen


def test_rest_adapter_on_recorded_2511(rest: tuple[SlurmRestAdapter, list[httpx.Request]]) -> None:
    adapter, seen = rest
    info = adapter.ping()
    assert adapter.version == "v0.0.44" and info.version == "25.11.7"
    spec = JobSpec(
        name="n", script="true", time_limit_minutes=2, user="brokerfix", account="fixacct", tag="t"
    )
    assert adapter.submit(spec) == str(load("rest_submit.json")["body"]["job_id"])
    sent = json.loads(next(r for r in seen if r.url.path.endswith("/job/submit")).content)
    assert sent["job"]["time_limit"] == {"set": True, "infinite": False, "number": 2}
    assert isinstance(sent["job"]["environment"], list) and sent["job"]["script"]
    assert seen[-1].headers["X-SLURM-USER-NAME"] == "brokerfix"
    with pytest.raises(SubmitRejected) as caught:
        adapter.submit(
            JobSpec(
                name="n",
                script="true",
                time_limit_minutes=2,
                user="brokerfix",
                account="nope",
                tag="t",
            )
        )
    assert caught.value.code == 2045
    adapter.cancel("999999")  # 25.11 answers 200 for an unknown job


def test_rest_asks_slurmdb_for_forgotten_jobs_one_step_each(
    rest: tuple[SlurmRestAdapter, list[httpx.Request]],
) -> None:
    adapter, seen = rest
    forgotten = ["1001", "1002"]  # not in rest_jobs.json: asked of slurmdb
    assert adapter.status(forgotten) == {}
    query = next(r for r in seen if r.url.path == "/slurmdb/v0.0.44/jobs")
    assert query.url.params.get_list("step") == forgotten
    assert adapter.status(["999999"]) == {}  # "found nothing" is an empty answer


def test_cli_refused_sbatch_2511(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rc, _, stderr = (FIXTURES / "sbatch_bad_account.txt").read_text().partition("\n")
    (bin_dir / "sbatch").write_text(
        f"#!/bin/bash\ncat >/dev/null\ncat >&2 <<'EOF'\n{stderr}EOF\nexit {rc[3:]}\n"
    )
    (bin_dir / "sbatch").chmod(0o755)
    adapter = SlurmCliAdapter("gamma", bin_dir=str(bin_dir), allow_root_jobs=True)
    with pytest.raises(SubmitRejected, match="Invalid account"):
        adapter.submit(JobSpec(name="n", script="true", time_limit_minutes=2, account="x"))


STATES = json.loads((FIXTURES / "states_ids.json").read_text())


def test_held_suspended_and_timed_out_jobs_2511() -> None:
    live = parse.parse_jobs(load("squeue_states.json"), "gamma")
    held, suspended = live[STATES["held"]], live[STATES["suspended"]]
    assert held.state is JobState.PENDING and held.reason == "AssocGrpBillingMinutes"
    assert held.nodes == () and held.start_time is None
    assert suspended.state is JobState.SUSPENDED and suspended.nodes == ("gamma1",)
    assert suspended.elapsed_s == 1  # its pre_sus_time: suspended a second after it started
    assert live[STATES["timeout"]].state is JobState.RUNNING

    done = parse.parse_jobs(load("sacct_states.json"), "gamma")
    timed_out = done[STATES["timeout"]]
    assert timed_out.state is JobState.TIMEOUT and timed_out.elapsed_s >= 60  # type: ignore[operator]
    assert done[STATES["held"]].state is JobState.CANCELLED
    assert done[STATES["suspended"]].state is JobState.CANCELLED


@pytest.mark.parametrize("name", ["scontrol_nodes_drained.json", "rest_nodes_drained.json"])
def test_drained_node_2511(name: str) -> None:
    (node,) = parse.parse_nodes(load(name))
    assert (node.name, node.state, node.reason) == ("gamma1", "idle+drain", "gemm below reference")
    assert not parse.node_is_idle(node)
    (idle,) = parse.parse_nodes(load("scontrol_nodes.json"))
    assert parse.node_is_idle(idle)


def test_rest_polls_pass_back_last_update_and_keep_the_list_while_nothing_changed(
    rest: tuple[SlurmRestAdapter, list[httpx.Request]],
) -> None:
    """From 23.02 the controller's job list carries ``last_update``; the next poll
    passes it back, and "No job changes since" keeps the list already parsed (the
    controller packed nothing)."""
    adapter, seen = rest
    running = IDS["cancelled"]  # live in the recorded list
    first = adapter.status([running])
    again = adapter.status([running])
    assert again == first and running in first
    polls = [r.url for r in seen if r.url.path == "/slurm/v0.0.44/jobs"]
    stamp = load("rest_jobs.json")["last_update"]["number"]
    assert [u.params.get("update_time") for u in polls] == [None, str(stamp)]
