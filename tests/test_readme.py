"""The README's quick tour runs as written against `brokerctl serve` in a fresh directory."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from .servers import VENV_BIN, brokerctl_server, clean_env

ROOT = Path(__file__).resolve().parent.parent


def _tour() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick tour with curl", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


@pytest.mark.slow
def test_readme_tour(tmp_path: Path) -> None:
    # The embedded default's database is per user, not per directory: this test's own.
    env = clean_env(XDG_DATA_HOME=str(tmp_path / "share"))
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)
    with brokerctl_server("serve", tmp_path, env) as base:
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _tour()],
            cwd=tmp_path,
            env={**env, "B": base},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "active"
    assert lines[2] == "completed" and float(lines[3]) > 0
    assert "hello" in lines
    assert "plasma-poc" in lines  # GET /me: the member's project
    # The Python job ran under python, with its variable, in its working directory.
    assert "runs/a0.3" in lines and "alpha 0.3 in a0.3" in lines
    # The sweep (an array) ran its 4 tasks, each paid its share; then the pipeline's step.
    assert "4 tasks: 4 completed" in lines
    assert float(lines[lines.index("4 tasks: 4 completed") + 1]) > 0
    assert "point 2" in lines and "all points done" in lines
    assert lines.index("point 2") < lines.index("all points done")
    balance = json.loads(lines[-1])
    assert balance["granted_pfh"] == 10.0 and balance["charged_pfh"] > 0
    assert balance["available_pfh"] == pytest.approx(
        balance["granted_pfh"] - balance["held_pfh"] - balance["charged_pfh"], abs=1e-12
    )
