"""0018: GPU rates. Rate versions made before it are CPU rates (cpu_mflops = rate_mflops);
partitions, nodes and charge lines get their GPU columns with CPU-only defaults; down again,
the GPU columns and table go and the rows stay."""

from __future__ import annotations

import uuid

from sqlalchemy import inspect, text

from broker import migrate
from broker.db import make_engine

from .test_migrations import T0, Old, _downgrade


def test_0018_marks_old_rates_as_cpu_rates_and_downgrades(empty_url: str) -> None:
    url = empty_url
    migrate.upgrade(url, "0017")
    engine = make_engine(url)
    cluster, node = uuid.uuid4(), uuid.uuid4()
    try:
        with engine.begin() as conn:
            old = Old(conn)
            old.insert("cluster", id=cluster, name="alpha", created_at=T0, options={}, load={})
            old.insert(
                "partition", id=uuid.uuid4(), cluster_id=cluster, name="gpu", features=[],
                references={}, quick_references={}, allowed_qos=[], allowed_reservations=[],
                price_per_pfh=0.0,
            )  # fmt: skip
            old.insert("node", id=node, cluster_id=cluster, name="n1", partitions=["gpu"],
                       rate_mflops=40_000, updated_at=T0)  # fmt: skip
            old.insert("node_rate", node_id=node, rate_mflops=40_000, samples=1, valid_from=T0)
        migrate.upgrade(url, "0018")
        with engine.connect() as conn:
            rate = conn.execute(text("SELECT rate_mflops, cpu_mflops FROM node_rate")).one()
            assert tuple(rate) == (40_000, 40_000)
            part = conn.execute(
                text("SELECT gpu_precision, shared, validation_args FROM partition")
            ).one()
            assert tuple(part) == ("fp64", False, "")
            assert conn.execute(text("SELECT gpu_type FROM node")).scalar() is None
            assert conn.execute(text("SELECT count(*) FROM gpu_result")).scalar() == 0
        _downgrade(url, "0017")
        with engine.connect() as conn:
            insp = inspect(conn)
            assert "gpu_result" not in insp.get_table_names()
            assert "cpu_mflops" not in {c["name"] for c in insp.get_columns("node_rate")}
            assert "gpu_precision" not in {c["name"] for c in insp.get_columns("partition")}
            assert "precision" not in {c["name"] for c in insp.get_columns("charge_line")}
            assert conn.execute(text("SELECT rate_mflops FROM node_rate")).scalar() == 40_000
        migrate.upgrade(url, "0018")  # and up again
        assert migrate.current(url) == "0018"
    finally:
        engine.dispose()
