"""slurmrestd API version discovery: only a good ping pins a version; an upgrade re-discovers.

httpx.MockTransport plays a slurmrestd whose answers the tests change between calls.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest

from scheduler_adapters import AdapterConfigError, SchedulerUnavailable
from scheduler_adapters.slurm.rest import SlurmRestAdapter, mint_token

KEY = b"k" * 32


def ping_body(release: str = "25.11.7") -> dict[str, object]:
    major, minor, micro = release.split(".")
    return {
        "pings": [{"hostname": "localhost", "pinged": "UP", "mode": "primary"}],
        "meta": {
            "slurm": {
                "release": release,
                "version": {"major": major, "minor": minor, "micro": micro},
            }
        },
        "errors": [],
        "warnings": [],
    }


class FakeRest:
    """A slurmrestd speaking ``versions``; ``fail`` (if set) answers every ping instead."""

    def __init__(self, versions: set[str]) -> None:
        self.versions = versions
        self.fail: Callable[[httpx.Request], httpx.Response] | None = None
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        parts = request.url.path.strip("/").split("/")  # slurm, v0.0.4x, ping|jobs
        if parts[-1] == "ping" and self.fail is not None:
            return self.fail(request)
        if len(parts) < 3 or parts[1] not in self.versions:
            return httpx.Response(404, text="Unable to find requested URL")
        if parts[-1] == "ping":
            return httpx.Response(200, json=ping_body())
        if parts[-1] in ("jobs", "nodes"):
            return httpx.Response(200, json={parts[-1]: [], "errors": [], "warnings": []})
        return httpx.Response(404, text="Unable to find requested URL")


def adapter(tmp_path: Path, server: FakeRest, **kw: object) -> SlurmRestAdapter:
    key = tmp_path / "jwt.key"
    key.write_bytes(KEY)
    return SlurmRestAdapter(
        "gamma",
        url="http://rest.test",
        jwt_key_file=str(key),
        transport=httpx.MockTransport(server),
        **kw,  # type: ignore[arg-type]
    )


def _timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.mark.parametrize(
    ("fail", "error"),
    [
        (lambda r: httpx.Response(500, text="Internal Server Error"), SchedulerUnavailable),
        (
            lambda r: httpx.Response(
                503, json={"errors": [{"error_number": 1007, "error": "Protocol auth error"}]}
            ),
            SchedulerUnavailable,
        ),
        (lambda r: httpx.Response(401, text="Authentication failure"), AdapterConfigError),
        (_timeout, SchedulerUnavailable),
    ],
    ids=["500", "503-json", "401", "timeout"],
)
def test_a_failed_ping_pins_no_version(
    tmp_path: Path, fail: Callable[[httpx.Request], httpx.Response], error: type[Exception]
) -> None:
    server = FakeRest({"v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44"})
    server.fail = fail
    rest = adapter(tmp_path, server)
    with pytest.raises(error):
        rest.ping()
    assert rest.api_version is None
    with pytest.raises(error):
        rest.status(["1"])
    assert rest.api_version is None
    server.fail = None  # slurmrestd recovered: discovery runs again and pins the newest
    assert rest.ping().version == "25.11.7"
    assert rest.api_version == "v0.0.44"


def test_an_upgrade_that_drops_the_version_is_rediscovered(tmp_path: Path) -> None:
    server = FakeRest({"v0.0.39", "v0.0.40", "v0.0.41"})  # 23.x-era slurmrestd
    rest = adapter(tmp_path, server)
    assert rest.status(["1"]) == {} and rest.api_version == "v0.0.41"
    server.versions = {"v0.0.42", "v0.0.43", "v0.0.44"}  # upgraded to 25.11
    server.paths.clear()
    assert rest.status(["1"]) == {}
    assert rest.api_version == "v0.0.44"
    assert server.paths[0] == "/slurm/v0.0.41/jobs"  # the old version 404s once
    assert server.paths[1:4] == [
        "/slurm/v0.0.41/ping",
        "/slurm/v0.0.44/ping",
        "/slurm/v0.0.44/jobs",
    ]  # gone, re-discovered, retried
    assert server.paths[-1] == "/slurmdb/v0.0.44/jobs"


def test_a_configured_version_is_never_replaced(tmp_path: Path) -> None:
    server = FakeRest({"v0.0.44"})
    rest = adapter(tmp_path, server, api_version="v0.0.41")
    with pytest.raises(Exception, match="404"):
        rest.status(["1"])
    assert rest.api_version == "v0.0.41"
    assert not any(p.endswith("/ping") for p in server.paths)


def test_a_404_of_a_live_version_does_not_rediscover(tmp_path: Path) -> None:
    server = FakeRest({"v0.0.44"})
    rest = adapter(tmp_path, server)
    rest.ping()
    server.paths.clear()
    with pytest.raises(Exception, match="404"):
        rest._call("GET", "/slurm/v0.0.44/nowhere")
    assert rest.api_version == "v0.0.44"
    assert server.paths == ["/slurm/v0.0.44/nowhere", "/slurm/v0.0.44/ping"]


def test_tokens_are_pyjwt_hs256_with_slurm_claims() -> None:
    token = mint_token(KEY, "slurm", 60, now=1000)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"iat": 1000, "exp": 1060, "sun": "slurm"}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, b"x" * 32, algorithms=["HS256"], options={"verify_exp": False})
