"""Node validation on the live dev cluster alpha: rate, degrade + drain in Slurm, resume."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import scheduler_adapters as sa_
from broker.app import create_app
from broker.db import session_scope
from broker.models import Partition, RunState, ValidationRun
from broker.services import slurm_sync, validation
from broker.services.principal import SYSTEM
from broker.worker import PassStats

from .._slurm import ensure_posix_user, load_clusters
from .conftest import Api, make_settings, operator_token

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

VALIDATOR = "hcbvalidator"


@pytest.fixture(scope="module")
def vlive(
    slurm_clusters_file: Path,
    kernels_python: str,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[Api]:
    ensure_posix_user(VALIDATOR, system=True)  # the broker's own user, not a tenant
    tmp = tmp_path_factory.mktemp("vlive")
    shutil.copy(sqlite_template, tmp / "broker.db")
    settings = make_settings(
        f"sqlite:///{tmp / 'broker.db'}",
        tmp,
        clusters_file=slurm_clusters_file,
        validation_args="--quick",
        validation_min_gemm_peak_ratio=0.0,
        validation_user=VALIDATOR,
        validation_python=kernels_python,
    )
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        with session_scope(app.state.session_factory) as s:
            results = slurm_sync.sync(
                s,
                settings.load_clusters(),
                dry_run=False,
                only="alpha",
                service=(settings.validation_account, VALIDATOR),
            )
            assert not results[0].error, results
        app.state.worker.refresh_clusters()
        yield Api(client, operator_token(app))
        # Leave alpha in service whatever happened (resuming an idle node is refused).
        with contextlib.suppress(sa_.SchedulerError):
            app.state.adapters.get("alpha").resume("localhost")


def _campaign(api: Api) -> ValidationRun:
    app = api.client.app
    with session_scope(app.state.session_factory) as s:  # type: ignore[attr-defined]
        run_id = validation.start_campaign(
            s,
            app.state.adapters,
            app.state.settings,
            SYSTEM,
            "alpha",
            node="localhost",  # type: ignore[attr-defined]
        )[0].id
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        app.state.worker.poll(PassStats())  # type: ignore[attr-defined]
        with session_scope(app.state.session_factory) as s:  # type: ignore[attr-defined]
            run = s.get(ValidationRun, run_id)
            assert run is not None
            if run.state.finished:
                return run
        time.sleep(0.5)
    raise AssertionError("validation did not finish")


def _sinfo(clusters_file: Path) -> str:
    conf = load_clusters(clusters_file)["alpha"]["options"]["slurm_conf"]
    return subprocess.run(
        ["sinfo", "-N", "-h", "-o", "%N|%T|%E", "-n", "localhost"],
        env={**os.environ, "SLURM_CONF": conf},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _refs(
    api: Api, refs: dict[str, list[float]], full: dict[str, list[float]] | None = None
) -> None:
    """The partition's quick references (the campaigns here run --quick), and full ones."""
    with session_scope(api.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        part = s.scalar(select(Partition).where(Partition.name == "debug"))
        assert part is not None
        part.quick_references = refs
        part.references = full or {}


def test_validate_degrade_drain_and_resume_on_alpha(vlive: Api, slurm_clusters_file: Path) -> None:
    api = vlive
    run = _campaign(api)
    assert run.state is RunState.PASSED, run.reasons
    node = next(n for n in api.get("/clusters/alpha/nodes").json() if n["name"] == "localhost")
    assert node["validation"] == "validated" and node["measured"]
    assert node["rate_tflops"] == pytest.approx(run.gemm_gflops / 1000, rel=1e-3)  # type: ignore[operator]

    # Full references no quick run can meet: a quick run of this healthy node is not
    # judged by them, and does not degrade it.
    _refs(api, {}, full={"gemm_gflops": [1e7, -0.05]})
    quick = _campaign(api)
    assert quick.state is RunState.PASSED, quick.reasons
    state = _sinfo(slurm_clusters_file)
    assert "drain" not in state.split("|")[1], state
    node = next(n for n in api.get("/clusters/alpha/nodes").json() if n["name"] == "localhost")
    assert node["validation"] == "validated"

    _refs(api, {"gemm_gflops": [1e7, -0.05]})  # quick references it cannot meet
    failed = _campaign(api)
    assert failed.state is RunState.FAILED
    state = _sinfo(slurm_clusters_file)
    assert "drain" in state.split("|")[1] and "gemm_gflops" in state, state

    _refs(api, {})
    again = _campaign(api)  # queued first, then the node is resumed behind it
    assert again.state is RunState.PASSED, again.reasons
    state = _sinfo(slurm_clusters_file)
    assert "drain" not in state.split("|")[1], state
    node = next(n for n in api.get("/clusters/alpha/nodes").json() if n["name"] == "localhost")
    assert node["validation"] == "validated"
