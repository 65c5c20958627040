"""The README's quick tour runs as written against `brokerctl serve` in a fresh directory."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tour() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick tour with curl", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_readme_tour(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = f"{venv_bin}:{env['PATH']}"
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [f"{venv_bin}/brokerctl", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
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
        balance = httpx.Response(200, text=lines[-1]).json()
        assert balance["granted_pfh"] == 10.0 and balance["charged_pfh"] > 0
        assert balance["available_pfh"] == pytest.approx(
            balance["granted_pfh"] - balance["held_pfh"] - balance["charged_pfh"], abs=1e-12
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
