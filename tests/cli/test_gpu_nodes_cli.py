"""brokerctl nodes list | gpus | rates: a GPU node's GPUs, their figures and rate history."""

from __future__ import annotations

from broker.db import make_engine, make_session_factory, session_scope
from tests.web.test_ops_gpus import seed_gpu_node

from .conftest import Cli


def test_nodes_gpus_and_rates(cli: Cli) -> None:
    cli.run("cluster", "ping")  # mirrors the built-in local cluster and its nodes
    engine = make_engine(cli.url)
    with session_scope(make_session_factory(engine)) as s:
        seed_gpu_node(s, "local1")
    engine.dispose()

    nodes = {n["name"]: n for n in cli.json("nodes", "list", "local")}
    assert nodes["local1"]["gpu_rates_tflops"] == [50.0, 50.0]
    table = cli.run("nodes", "list", "local").stdout
    assert "2 x h200" in table and "50 + 50" in table

    gpus = cli.json("nodes", "gpus", "local")
    assert [(g["node"], g["index"], g["rate_tflops"]) for g in gpus] == [
        ("local1", 0, 50.0),
        ("local1", 1, 50.0),
    ]
    assert "NVIDIA H200" in cli.run("nodes", "gpus", "local").stdout

    rates = cli.json("nodes", "rates", "local", "local1")
    assert [r["gpu_rates_tflops"] for r in rates] == [[50.0, 50.0], [50.0, 49.0]]
    table = cli.run("nodes", "rates", "local", "local1").stdout
    assert "50 + 49" in table and "fp64" in table
    assert "not found" in cli.run("nodes", "rates", "local", "nope", code=1).stderr
