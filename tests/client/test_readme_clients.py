"""The README's client, PSI/J and submitit blocks run as written against a running
broker (embedded default and alpha/beta), with the client installed as a team
installs it; every job they ran is charged to the enterprise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from broker.client import Client

from .conftest import Broker, _open_dir

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python client, PSI/J and submitit", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run_block(code: str, env: dict[str, str], *args: str, timeout_s: float = 300) -> str:
    where = _open_dir("readme-block-")
    script = where / "block.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (where / "pwned").exists()
    return out.stdout


def test_readme_has_the_three_blocks() -> None:
    blocks = readme_blocks()
    assert len(blocks) == 3
    assert "Client()" in blocks[0] and "JobExecutor" in blocks[1] and "map_array" in blocks[2]


def test_readme_client_block(broker: Broker, client_site: Path) -> None:
    out = run_block(readme_blocks()[0], broker.env(PYTHONPATH=str(client_site)))
    assert out.splitlines() == ["completed hello", "6", "True"]


def test_readme_psij_block_same_on_local_and_hpc_broker(broker: Broker, client_site: Path) -> None:
    env = broker.env(PYTHONPATH=str(client_site))
    local = run_block(readme_blocks()[1], env, "local")
    remote = run_block(readme_blocks()[1], env, "hpc-broker")
    assert local == remote == "COMPLETED hello, world; $(touch pwned)\n"
    if broker.clusters == ("local",):
        assert not list(broker.workdir.rglob("pwned"))


def test_readme_submitit_block_maps_8_inputs_as_one_array(
    broker: Broker, client_site: Path, job_python: str
) -> None:
    env = broker.env(PYTHONPATH=str(client_site), HPC_BROKER_JOB_PYTHON=job_python)
    out = run_block(readme_blocks()[2], env, timeout_s=600)
    assert out.strip() == str([x * x for x in range(8)])
    with Client(broker.url, broker.member, project_id=broker.project_id) as c:
        arrays = [j for j in c.iter_jobs() if j.name == "submitit-square"]
        assert len(arrays) == 1, arrays  # one job, eight tasks
        job = c.wait(arrays[0].id, timeout_s=60)
        assert job.array == "0-7%4" and job.array_tasks == 8
        tasks = c.tasks(job.id)
        assert [t.index for t in tasks] == list(range(8))
        assert all(t.state == "completed" for t in tasks)
        assert all((t.charge_pfh or 0) > 0 for t in tasks)  # each task billed its second
        # (each figure is rounded for JSON: the sum matches to that rounding)
        assert sum(t.charge_pfh or 0 for t in tasks) == pytest.approx(job.charge_pfh, rel=1e-4)


def test_quota_charged_for_everything_the_readme_ran(broker: Broker) -> None:
    """Runs after the blocks above (file order): every job ran a second or more and is
    charged; the enterprise's balance holds the sum."""
    with Client(broker.url, broker.member, project_id=broker.project_id) as c:
        jobs = [c.wait(j.id, timeout_s=120) for j in c.iter_jobs()]
        names = {j.name for j in jobs}
        assert {"hello", "sh", "submitit-square"} <= names, names
        for j in jobs:
            if j.name in ("hello", "sh", "submitit-square"):
                assert j.charge_pfh is not None and j.charge_pfh > 0, j
        bal = c.balance()
        charged = sum(j.charge_pfh or 0 for j in jobs)
        assert bal.charged_pfh == pytest.approx(charged, rel=1e-4)  # each rounded for JSON
        assert bal.held_pfh == pytest.approx(0, abs=1e-12)
