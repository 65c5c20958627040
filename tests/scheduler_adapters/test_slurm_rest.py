"""The slurmrestd adapter against httpx.MockTransport replaying recorded replies."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler_adapters import (
    AdapterConfigError,
    JobSpec,
    JobState,
    SchedulerError,
    SchedulerUnavailable,
    SubmitRejected,
)
from scheduler_adapters.slurm.rest import SlurmRestAdapter, mint_token
from scheduler_adapters.slurm.rest_body import job_description

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"
KEY = b"k" * 32
Handler = Callable[[httpx.Request], httpx.Response]


def recorded(rel: str) -> httpx.Response:
    doc = json.loads((FIXTURES / rel).read_text())
    if "status" in doc:
        if "body" in doc:
            return httpx.Response(doc["status"], json=doc["body"])
        return httpx.Response(doc["status"], text=doc.get("text", ""))
    return httpx.Response(200, json=doc)


def adapter(tmp_path: Path, handler: Handler, **kw: Any) -> SlurmRestAdapter:
    key = tmp_path / "jwt.key"
    key.write_bytes(KEY)
    return SlurmRestAdapter(
        "beta",
        url="http://rest.test",
        jwt_key_file=str(key),
        transport=httpx.MockTransport(handler),
        **kw,
    )


def routes_2205(seen: list[httpx.Request]) -> Handler:
    table = {
        ("GET", "/slurm/v0.0.38/ping"): "22.05/rest_ping.json",
        ("POST", "/slurm/v0.0.38/job/submit"): "22.05/rest_submit.json",
        ("GET", "/slurm/v0.0.38/jobs"): "22.05/rest_jobs.json",
        ("GET", "/slurm/v0.0.38/nodes"): "22.05/rest_nodes.json",
        ("DELETE", "/slurm/v0.0.38/job/999999"): "22.05/rest_cancel_unknown.json",
        ("GET", "/slurmdb/v0.0.38/jobs"): "22.05/rest_slurmdb_nothing_found.json",
    }

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        rel = table.get((request.method, request.url.path))
        return recorded(rel) if rel else recorded("22.05/rest_unknown_version.json")

    return handle


def test_discovers_v0038_and_pings(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    rest = adapter(tmp_path, routes_2205(seen))
    info = rest.ping()
    assert rest.version == "v0.0.38" and info.version == "22.05.8"
    assert info.partitions[0].name == "compute" and info.partitions[0].total_nodes == 2
    tried = [r.url.path for r in seen if r.url.path.endswith("/ping")]
    assert tried[0] == "/slurm/v0.0.44/ping" and "/slurm/v0.0.38/ping" in tried


def test_token_is_a_valid_hs256_jwt_for_the_service_user(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    rest = adapter(tmp_path, routes_2205(seen), api_version="v0.0.38")
    rest.nodes()
    token = seen[-1].headers["X-SLURM-USER-TOKEN"]
    head, body, sig = token.split(".")
    expected = hmac.new(KEY, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "==") == expected
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    assert claims["sun"] == "slurm" and claims["exp"] > claims["iat"]
    assert seen[-1].headers["X-SLURM-USER-NAME"] == "slurm"


def test_submit_acts_as_the_user_with_broker_fields(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    rest = adapter(tmp_path, routes_2205(seen), api_version="v0.0.38")
    job_id = rest.submit(
        JobSpec(
            name="n",
            script="#SBATCH -A evil\necho",
            time_limit_minutes=3,
            account="acme",
            user="alice",
            tag="t-1",
            working_dir="/w",
        )
    )
    assert job_id == "1"
    request = seen[-1]
    assert request.headers["X-SLURM-USER-NAME"] == "alice"
    body = json.loads(request.content)
    assert body["job"]["account"] == "acme" and body["job"]["comment"] == "broker:t-1"
    assert body["job"]["environment"]["USER"] == "alice"
    assert body["job"]["nodes"] == [1, 1] and body["job"]["exclusive"] == "exclusive"
    assert "#SBATCH -A evil" not in body["script"]


def test_status_uses_jobs_then_one_slurmdb_call(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    rest = adapter(tmp_path, routes_2205(seen), api_version="v0.0.38")
    answer = rest.status(["1", "7", "8"])
    assert answer["1"].state is JobState.FAILED and answer["1"].exit_code == 3
    assert set(answer) == {"1"}
    db = [r for r in seen if r.url.path.startswith("/slurmdb/")]
    assert len(db) == 1 and "step=7%2C8" in str(db[0].url)


def test_rejection_is_permanent_and_typed(tmp_path: Path) -> None:
    rest = adapter(
        tmp_path, lambda r: recorded("22.05/rest_submit_bad_account.json"), api_version="v0.0.38"
    )
    with pytest.raises(SubmitRejected) as caught:
        rest.submit(JobSpec(name="n", script="true", time_limit_minutes=1, user="u"))
    assert caught.value.code == 2045 and not caught.value.transient


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(503, text="busy"), SchedulerUnavailable),
        (httpx.Response(401, text=""), AdapterConfigError),
        (
            httpx.Response(
                500,
                json={"errors": [{"error_number": 1007, "error": "Protocol authentication error"}]},
            ),
            SchedulerUnavailable,
        ),
        (
            httpx.Response(500, json={"errors": [{"error_number": 2099, "error": "odd"}]}),
            SchedulerError,
        ),
    ],
)
def test_failures_are_classified(
    tmp_path: Path, response: httpx.Response, error: type[SchedulerError]
) -> None:
    rest = adapter(tmp_path, lambda r: response, api_version="v0.0.38")
    with pytest.raises(error) as caught:
        rest.nodes()
    assert caught.value.transient is (error is SchedulerUnavailable)


def test_unreachable_is_transient(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(SchedulerUnavailable):
        adapter(tmp_path, refuse).ping()


def test_cancel_of_unknown_job_is_a_no_op(tmp_path: Path) -> None:
    rest = adapter(tmp_path, routes_2205([]), api_version="v0.0.38")
    rest.cancel("999999")
    rest.cancel("not-a-job")


def test_token_file_is_read_per_request(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    seen: list[httpx.Request] = []
    rest = SlurmRestAdapter(
        "beta",
        url="http://rest.test",
        token_file=str(token),
        api_version="v0.0.38",
        transport=httpx.MockTransport(routes_2205(seen)),
    )
    rest.nodes()
    token.write_text("def")
    rest.nodes()
    assert [r.headers["X-SLURM-USER-TOKEN"] for r in seen] == ["abc", "def"]


def test_exactly_one_credential() -> None:
    with pytest.raises(AdapterConfigError):
        SlurmRestAdapter("b", url="http://x")
    with pytest.raises(AdapterConfigError):
        SlurmRestAdapter("b", url="http://x", jwt_key_file="k", token_file="t")


def test_v0040_shapes(tmp_path: Path) -> None:
    table = {
        "/slurm/v0.0.40/jobs": "24.05/jobs.json",
        "/slurm/v0.0.40/nodes": "24.05/nodes.json",
        "/slurm/v0.0.40/ping": "24.05/ping.json",
        "/slurm/v0.0.40/job/submit": "24.05/submit.json",
        "/slurmdb/v0.0.40/jobs": "24.05/slurmdb_jobs.json",
    }
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        rel = table.get(request.url.path)
        return recorded(rel) if rel else httpx.Response(404, text="not here")

    rest = adapter(tmp_path, handle, slurm_cluster="gamma")
    info = rest.ping()
    assert rest.version == "v0.0.40" and info.version == "24.05.4"
    assert {p.name for p in info.partitions} == {"batch", "gpu"}
    assert (
        rest.submit(
            JobSpec(
                name="n",
                script="true",
                time_limit_minutes=9,
                user="u",
                memory_mb=100,
                nodelist=("cn01",),
            )
        )
        == "111"
    )
    body = json.loads(seen[-1].content)
    assert "script" not in body and body["job"]["script"].startswith("#!/bin/bash")
    assert body["job"]["time_limit"] == {"set": True, "infinite": False, "number": 9}
    assert body["job"]["required_nodes"] == ["cn01"] and body["job"]["exclusive"] == ["true"]
    assert isinstance(body["job"]["environment"], list)
    answer = rest.status(["101", "110", "5"])
    assert answer["101"].state is JobState.COMPLETED and answer["110"].state is JobState.TIMEOUT
    assert "5" not in answer


@pytest.mark.parametrize(
    ("version", "field", "value"),
    [
        ("v0.0.38", "exclusive", "exclusive"),
        ("v0.0.40", "exclusive", ["true"]),
        ("v0.0.41", "shared", ["none"]),
        ("v0.0.44", "shared", ["none"]),
    ],
)
def test_job_description_whole_node_and_gpus(version: str, field: str, value: object) -> None:
    spec = JobSpec(name="n", script="true", time_limit_minutes=1, gpus_per_node=2)
    job = job_description(spec, version)["job"]
    assert job[field] == value and {"exclusive", "shared"} & set(job) == {field}
    gpus = ("gpus_per_node", "2") if version == "v0.0.38" else ("tres_per_node", "gres/gpu:2")
    assert job[gpus[0]] == gpus[1]
    shared = job_description(dataclasses.replace(spec, exclusive=False), version)["job"]
    assert not {"exclusive", "shared"} & set(shared)


def test_job_description_v0039_environment_is_a_list() -> None:
    body = job_description(
        JobSpec(name="n", script="true", time_limit_minutes=1, environment={"A": "1"}), "v0.0.39"
    )
    assert "A=1" in body["job"]["environment"] and "script" in body


def test_mint_token_is_deterministic() -> None:
    assert mint_token(KEY, "slurm", 60, now=1000) == mint_token(KEY, "slurm", 60, now=1000)
