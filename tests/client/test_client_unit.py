"""The client without a broker: configuration, errors, retries, its public names, and
that it loads nothing of the server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import broker.client as bc
from broker.client import (
    AsyncClient,
    Backoff,
    Client,
    ConfigError,
    Conflict,
    InvalidInput,
    JobSpec,
    QuotaExceeded,
    ServerError,
    load_config,
)
from broker.client._errors import error_from_response

JOB = {"id": str(uuid.uuid4()), "name": "j", "state": "accepted"}
FAST = Backoff(first_s=0.001, max_s=0.002)


def test_public_names_are_sorted_and_exist() -> None:
    assert bc.__all__ == sorted(bc.__all__, key=lambda n: (not n.isupper(), n))
    for name in bc.__all__:
        assert getattr(bc, name) is not None


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    code = (
        "import sys, broker.client\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('scheduler_adapters', 'kernels')"
        " or (m.startswith('broker.') and not m.startswith('broker.client'))]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- configuration -------------------------------------------------------------


def test_config_from_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[default]\nurl = "http://file:1"\ntoken = "file-token"\nproject = "p1"\n')
    cfg.chmod(0o600)
    env = {"HPC_BROKER_CONFIG": str(cfg), "HPC_BROKER_TOKEN": "env-token"}
    got = load_config(env=env)
    assert (got.base_url, got.token, got.project_id) == ("http://file:1/api/v1", "env-token", "p1")
    assert "env-token" not in repr(got)
    assert load_config("http://arg:2/api/v1/", env=env).base_url == "http://arg:2/api/v1"


def test_config_profiles_and_token_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    token.chmod(0o600)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[staging]\nurl = "http://staging"\ntoken_file = "{token}"\n')
    env = {"HPC_BROKER_CONFIG": str(cfg), "HPC_BROKER_PROFILE": "staging"}
    assert load_config(env=env).token == "secret"
    with pytest.raises(ConfigError, match=r"no \[prod\] profile"):
        load_config(env=env, profile="prod")


def test_a_token_others_can_read_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[default]\nurl = "http://x"\ntoken = "t"\n')
    cfg.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(env={"HPC_BROKER_CONFIG": str(cfg)})
    token = tmp_path / "token"
    token.write_text("t")
    token.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config("http://x", env={"HPC_BROKER_TOKEN_FILE": str(token)})


def test_missing_url_or_token_names_the_settings(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="HPC_BROKER_URL"):
        load_config(env=env)
    with pytest.raises(ConfigError, match="HPC_BROKER_TOKEN"):
        load_config("http://x", env=env)


# -- errors --------------------------------------------------------------------


def _resp(status: int, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(
        status, content=content, headers=headers, request=httpx.Request("POST", "http://b/x")
    )


def test_errors_are_typed_by_status_and_name() -> None:
    quota = error_from_response(_resp(409, {"error": "QuotaExceeded", "detail": "hold of 9"}))
    assert isinstance(quota, QuotaExceeded) and quota.detail == "hold of 9"
    other = error_from_response(_resp(409, {"error": "Conflict", "detail": "closed"}))
    assert type(other) is Conflict
    bad = error_from_response(_resp(422, {"error": "ValidationError", "detail": "nodes: >= 1"}))
    assert isinstance(bad, InvalidInput) and str(bad) == "422 ValidationError: nodes: >= 1"
    busy = error_from_response(_resp(503, b"<html>proxy</html>", **{"Retry-After": "7"}))
    assert isinstance(busy, ServerError) and busy.retry_after_s == 7.0
    assert busy.detail == "<html>proxy</html>" and busy.method == "POST"


# -- retries -------------------------------------------------------------------


def _mock(answers: list[httpx.Response], seen: list[httpx.Request]) -> Callable[..., Any]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return handler


def test_submit_retries_with_one_idempotency_key() -> None:
    seen: list[httpx.Request] = []
    answers = [httpx.Response(503, json={"error": "Unavailable", "detail": "db"})]
    answers.append(httpx.Response(202, json=JOB))
    transport = httpx.MockTransport(_mock(answers, seen))
    with Client("http://b", "t", project_id="p", transport=transport, backoff=FAST) as c:
        job = c.submit(JobSpec(name="j", script="true", time_limit_minutes=1))
    assert str(job.id) == JOB["id"]
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(seen) == 2 and len(keys) == 1
    assert json.loads(seen[0].content) == {
        "name": "j",
        "script": "true",
        "time_limit_minutes": 1,
        "nodes": 1,
    }


def test_a_refusal_is_not_retried() -> None:
    seen: list[httpx.Request] = []
    answers = [httpx.Response(422, json={"error": "ValidationError", "detail": "name: bad"})]
    transport = httpx.MockTransport(_mock(answers, seen))
    c = Client("http://b", "t", project_id="p", transport=transport, backoff=FAST)
    with c, pytest.raises(InvalidInput, match="name: bad"):
        c.submit(JobSpec(name="j", script="true", time_limit_minutes=1))
    assert len(seen) == 1


def test_wait_polls_when_the_broker_has_no_stream_to_spare() -> None:
    states = iter(["running", "running", "completed"])
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/events"):
            return httpx.Response(429, json={"error": "RateLimited", "detail": "4 open"})
        return httpx.Response(200, json={**JOB, "state": next(states)})

    with Client(
        "http://b", "t", transport=httpx.MockTransport(handler), retries=0, backoff=FAST
    ) as c:
        job = c.wait(JOB["id"], poll=FAST, timeout_s=10)
    assert job.state == "completed"
    assert paths.count(f"/api/v1/jobs/{JOB['id']}/events") == 1


def test_async_client_retries_with_one_key_too() -> None:
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(502, text="bad gateway"),
        httpx.Response(202, json=JOB),
    ]

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    async def run() -> Any:
        async with AsyncClient(
            "http://b", "t", project_id="p", transport=httpx.MockTransport(handler), backoff=FAST
        ) as c:
            return await c.submit(JobSpec(name="j", script="true", time_limit_minutes=1))

    assert str(asyncio.run(run()).id) == JOB["id"]
    assert len({r.headers["idempotency-key"] for r in seen}) == 1 and len(seen) == 2


def test_tasks_follow_every_page() -> None:
    pages = {
        None: {"items": [{"index": 0, "state": "completed"}], "next_cursor": "0"},
        "0": {"items": [{"index": 1, "state": "running"}], "next_cursor": None},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    with Client("http://b", "t", transport=httpx.MockTransport(handler)) as c:
        assert [(t.index, t.state) for t in c.tasks(JOB["id"])] == [
            (0, "completed"),
            (1, "running"),
        ]


def test_a_state_this_client_does_not_know_ends_the_wait_once_ended() -> None:
    newer = bc.Job.model_validate({**JOB, "state": "vanished", "ended_at": "2026-12-04T12:00:00Z"})
    assert newer.terminal
    assert not bc.Job.model_validate({**JOB, "state": "vanished"}).terminal
    assert not bc.Job.model_validate({**JOB, "state": "running"}).terminal
