"""GPUs in Slurm's answers: jobs' allocated GPUs and nodes' configured ones.

Replays the recordings of ``tests/fixtures/slurm/record_gpu.py`` (the dev clusters'
partition ``gpu``: two nodes with two fake h200 GPUs each): in each version one job with
``--gpus-per-node=1`` on two nodes and one on one node, seen by the controller (squeue,
slurmrestd's jobs) while they ran and by accounting (sacct, slurmdb) after they ended.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from scheduler_adapters import JobInfo, JobState
from scheduler_adapters.arrays import aggregate
from scheduler_adapters.slurm import parse
from scheduler_adapters.slurm.common import from_accounting

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"


def load(rel: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / rel).read_text())
    return doc["body"] if "status" in doc and "body" in doc else doc


def ids(version: str, cluster: str) -> list[str]:
    found: list[str] = load(f"{version}/gpu_ids.json")[cluster]
    return found


@pytest.mark.parametrize(
    ("rel", "version", "cluster", "state"),
    [
        ("22.05/gpu_squeue.json", "22.05", "alpha", JobState.RUNNING),
        ("22.05/gpu_sacct.json", "22.05", "alpha", JobState.COMPLETED),
        ("22.05/gpu_rest_jobs.json", "22.05", "beta", JobState.RUNNING),
        ("22.05/gpu_rest_slurmdb_jobs.json", "22.05", "beta", JobState.COMPLETED),
        ("25.11/gpu_squeue.json", "25.11", "gamma", JobState.RUNNING),
        ("25.11/gpu_sacct.json", "25.11", "gamma", JobState.COMPLETED),
        ("25.11/gpu_rest_jobs.json", "25.11", "gamma", JobState.RUNNING),
        ("25.11/gpu_rest_slurmdb_jobs.json", "25.11", "gamma", JobState.COMPLETED),
    ],
)
def test_allocated_gpus_of_jobs(rel: str, version: str, cluster: str, state: JobState) -> None:
    two_nodes, one_node = ids(version, cluster)
    jobs = parse.parse_jobs(load(rel), cluster)
    assert jobs[two_nodes].state is state and jobs[one_node].state is state
    assert len(jobs[two_nodes].nodes) == 2 and jobs[two_nodes].alloc_gpus == 2
    assert len(jobs[one_node].nodes) == 1 and jobs[one_node].alloc_gpus == 1
    assert jobs[one_node].partition == "gpu"


def test_jobs_without_gpus_have_none() -> None:
    for rel in ("22.05/squeue_running.json", "22.05/sacct.json", "25.11/sacct.json"):
        assert {j.alloc_gpus for j in parse.parse_jobs(load(rel)).values()} == {0}, rel


def test_a_pending_job_holds_no_gpus() -> None:
    doc = load("22.05/gpu_squeue.json")
    job = {**doc["jobs"][0], "job_state": "PENDING", "start_time": 0}
    assert parse.parse_job(job).alloc_gpus == 0


@pytest.mark.parametrize(
    ("rel", "cluster_nodes", "cpu_nodes"),
    [
        ("22.05/gpu_sinfo.json", ("alpha-g1", "alpha-g2"), ("localhost",)),
        ("22.05/gpu_rest_nodes.json", ("beta-g1", "beta-g2"), ("beta1", "beta2")),
        ("25.11/gpu_scontrol_nodes.json", ("gamma-g1", "gamma-g2"), ("gamma1",)),
        ("25.11/gpu_rest_nodes.json", ("gamma-g1", "gamma-g2"), ("gamma1",)),
    ],
)
def test_gpus_of_nodes(
    rel: str, cluster_nodes: tuple[str, ...], cpu_nodes: tuple[str, ...]
) -> None:
    nodes = {n.name: n for n in parse.parse_nodes(load(rel))}
    for name in cluster_nodes:
        assert (nodes[name].gpus, nodes[name].gpu_type) == (2, "h200")
        assert nodes[name].partitions == ("gpu",)
    for name in cpu_nodes:
        assert (nodes[name].gpus, nodes[name].gpu_type) == (0, None)


@pytest.mark.parametrize(
    ("gres", "expected"),
    [
        ("gpu:h200:2", (2, "h200")),
        ("gpu:h200:2(S:0-1)", (2, "h200")),
        ("gpu:2(S:0,1)", (2, None)),
        ("gpu:a100:2,gpu:h200:4(S:1)", (6, "a100,h200")),
        ("gpu", (1, None)),
        ("gpu:h200", (1, "h200")),
        ("gres:gpu:3", (3, None)),
        ("shard:8,mps:100", (0, None)),
        ("gpu:h200:2,shard:8", (2, "h200")),
        (["gpu:h200:4"], (4, "h200")),
        ("", (0, None)),
        ("(null)", (0, None)),
        (None, (0, None)),
    ],
)
def test_gres_gpus(gres: Any, expected: tuple[int, str | None]) -> None:
    assert parse.gres_gpus(gres) == expected


@pytest.mark.parametrize(
    ("tres", "expected"),
    [
        ({"cpu": "2", "gres/gpu": "2"}, 2),
        # A site that tracks typed GPUs too lists them twice: the total wins.
        ({"gres/gpu": "4", "gres/gpu:h200": "2", "gres/gpu:a100": "2"}, 4),
        ({"gres/gpu:h200": "2", "gres/gpu:a100": "1"}, 3),
        ({"gres/shard": "4"}, 0),
        ({"gres/gpu": {"set": True, "infinite": False, "number": 2}}, 2),
        ({}, 0),
    ],
)
def test_tres_gpus(tres: dict[str, Any], expected: int) -> None:
    assert parse.tres_gpus(tres) == expected


def test_typed_gpu_tres_in_accounting_are_not_counted_twice() -> None:
    doc = load("25.11/gpu_sacct.json")
    job = doc["jobs"][0]
    typed = {"count": 2, "id": 1002, "name": "gpu:h200", "type": "gres"}
    record = {**job, "tres": {**job["tres"], "allocated": [*job["tres"]["allocated"], typed]}}
    assert parse.parse_job(record).alloc_gpus == 2
    only_typed = [t for t in record["tres"]["allocated"] if t.get("name") != "gpu"]
    record = {**job, "tres": {**job["tres"], "allocated": only_typed}}
    assert parse.parse_job(record).alloc_gpus == 2


def test_an_ended_job_takes_its_gpus_from_accounting() -> None:
    cluster, (two_nodes, _) = "gamma", ids("25.11", "gamma")
    live = parse.parse_jobs(load("25.11/gpu_squeue.json"), cluster)[two_nodes]
    done = parse.parse_jobs(load("25.11/gpu_sacct.json"), cluster)[two_nodes]
    ended = dataclasses.replace(live, state=JobState.COMPLETED, alloc_gpus=0)
    assert from_accounting(ended, done).alloc_gpus == 2
    assert from_accounting(ended, dataclasses.replace(done, alloc_gpus=0)).alloc_gpus == 0
    assert from_accounting(dataclasses.replace(ended, alloc_gpus=2), None).alloc_gpus == 2


def test_an_array_holds_the_most_gpus_of_one_task() -> None:
    tasks = [
        JobInfo(job_id=f"7_{i}", state=JobState.RUNNING, array_task_id=i, alloc_gpus=g)
        for i, g in enumerate((1, 2, 0))
    ]
    whole = aggregate("7", tasks)
    assert whole.alloc_gpus == 2 and [t.alloc_gpus for t in whole.tasks] == [1, 2, 0]
