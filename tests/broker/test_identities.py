"""An enterprise's POSIX user is its own: unique, never root, a system account or the
broker's user; a user the submit host lacks is found before a job is accepted."""

from __future__ import annotations

import os
import pwd
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from broker.app import create_app
from broker.db import make_engine, make_session_factory, session_scope
from broker.errors import Conflict, InvalidInput
from broker.models import Enterprise
from broker.services import tenants
from broker.services.principal import SYSTEM

from .._slurm import MIN_TENANT_UID, ensure_posix_user
from .conftest import Api, make_settings, operator_token

#: A normal account the tests create (as root) to have a real uid >= 1000 at hand.
TENANT_USER = "tenantident"


def _system_account() -> str:
    """An account of this host with a uid below 1000 that is not on the reserved list."""
    for pw in sorted(pwd.getpwall(), key=lambda p: p.pw_uid):
        if 0 < pw.pw_uid < MIN_TENANT_UID and pw.pw_name not in tenants.RESERVED_USERS:
            return pw.pw_name
    pytest.skip("no system account on this host")


def _create(api: Api, posix_user: str, **extra: Any) -> Any:
    body = {"name": f"Ent {uuid.uuid4().hex[:8]}", "posix_user": posix_user, **extra}
    return api.post("/enterprises", json=body)


def _refused(r: Any, *words: str) -> None:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("posix_user: "), detail
    for word in words:
        assert word in detail, detail


@pytest.mark.parametrize("name", ["root", "nobody", "slurm"])
def test_root_and_reserved_accounts_are_refused(api: Api, name: str) -> None:
    _refused(_create(api, name), "reserved")


def test_a_system_account_is_refused(api: Api) -> None:
    name = _system_account()
    _refused(_create(api, name), "system account", f"uid {pwd.getpwnam(name).pw_uid}")


def test_the_brokers_own_users_are_refused(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # The validation user runs the broker's own jobs: never a tenant's.
    _refused(_create(api, api.client.app.state.settings.validation_user), "reserved")
    # The broker's own user (here root, also reserved: so pretend it is another name).
    monkeypatch.setattr(tenants, "_broker_user", lambda: "hcbself")
    _refused(_create(api, "hcbself"), "broker's own user")


def test_a_user_this_host_lacks_is_allowed(api: Api) -> None:
    name = f"u{uuid.uuid4().hex[:10]}"
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    r = _create(api, name)
    assert r.status_code == 201, r.text
    assert r.json()["posix_user"] == name


@pytest.fixture
def normal_user() -> str:
    if os.geteuid() != 0:
        pytest.skip("creating a POSIX user needs root")
    ensure_posix_user(TENANT_USER)
    return TENANT_USER


def test_the_uid_floor_is_a_setting(db_url: str, tmp_path: Path, normal_user: str) -> None:
    uid = pwd.getpwnam(normal_user).pw_uid
    assert uid >= MIN_TENANT_UID
    settings = make_settings(db_url, tmp_path, min_tenant_uid=uid + 1)
    app = create_app(settings, run_worker=False)
    with TestClient(app) as client:
        api = Api(client, operator_token(app))
        _refused(_create(api, normal_user), f"uid {uid}", f"at least {uid + 1}")
        app.state.settings = make_settings(db_url, tmp_path)  # default floor: 1000
        assert _create(api, normal_user).status_code == 201


def test_a_posix_user_belongs_to_one_enterprise(api: Api) -> None:
    name = f"u{uuid.uuid4().hex[:10]}"
    assert _create(api, name).status_code == 201
    r = _create(api, name, slurm_account=f"a{uuid.uuid4().hex[:10]}")
    assert r.status_code == 409, r.text
    assert f"posix_user {name!r} is another enterprise's" in r.json()["detail"]


def test_the_database_keeps_posix_users_unique(db_url: str) -> None:
    """The constraint holds even past the service's check (two creates at once)."""
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    try:
        with session_scope(factory) as s:
            tenants.create_enterprise(s, SYSTEM, name="First", posix_user="shared")
        with pytest.raises(IntegrityError), session_scope(factory) as s:
            s.add(Enterprise(name="Raw", posix_user="shared", slurm_account="e_raw"))
            s.flush()
        # A create racing another one: its check passed, the insert is refused: 409.
        with pytest.MonkeyPatch.context() as mp, session_scope(factory) as s:
            mp.setattr(tenants, "_require_unused", lambda *a: None)
            with pytest.raises(Conflict, match="posix_user"):
                tenants.create_enterprise(s, SYSTEM, name="Second", posix_user="shared")
            s.rollback()
    finally:
        engine.dispose()


def test_service_rules_default_to_a_floor_of_1000() -> None:
    with pytest.raises(InvalidInput) as err:
        tenants.check_posix_user(_system_account(), tenants.IdentityRules())
    assert err.value.field == "posix_user"
    tenants.check_posix_user("notonthishost", tenants.IdentityRules())


# -- a user missing on the submit host: 409 before the job is accepted ---------------
CLUSTERS = """
[[clusters]]
name = "cli"
adapter = "slurm-cli"
scratch_dir = "{scratch}/cli"
[clusters.options]
slurm_conf = "/nonexistent/slurm.conf"
[[clusters.partitions]]
name = "p"

[[clusters]]
name = "rest"
adapter = "slurmrestd"
scratch_dir = "{scratch}/rest"
[clusters.options]
url = "http://127.0.0.1:9"
token_file = "/nonexistent/token"
[[clusters.partitions]]
name = "p"

[[clusters]]
name = "local"
adapter = "local"
scratch_dir = "{scratch}/local"
[clusters.options]
root_dir = "{scratch}/local-scheduler"
[[clusters.partitions]]
name = "default"

[[clusters]]
name = "strict"
adapter = "local"
scratch_dir = "{scratch}/strict"
[clusters.options]
root_dir = "{scratch}/strict-scheduler"
fallback_user = ""
[[clusters.partitions]]
name = "default"
"""


@pytest.fixture
def sites(db_url: str, tmp_path: Path) -> Iterator[Api]:
    path = tmp_path / "clusters.toml"
    path.write_text(CLUSTERS.format(scratch=tmp_path))
    app = create_app(make_settings(db_url, tmp_path, clusters_file=path), run_worker=False)
    with TestClient(app) as client:
        yield Api(client, operator_token(app))


def test_a_user_missing_on_the_submit_host_is_a_409_before_acceptance(sites: Api) -> None:
    api = sites
    ent, member, project = api.tenant()  # hcb_ent_...: no such user on this host
    r = api.submit(project["id"], member, cluster="cli")
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert f"posix_user {ent['posix_user']!r} does not exist on the broker host" in detail
    assert "useradd" in detail and "slurmrestd" in detail
    assert api.get(f"/jobs?project_id={project['id']}", member).json()["items"] == []
    assert api.get(f"/enterprises/{ent['id']}/balance", member).json()["held_pfh"] == 0
    # slurmrestd submits as a user the scheduler knows, not this host: accepted.
    assert api.submit(project["id"], member, cluster="rest").status_code == 202
    # The local adapter falls back to an unprivileged user when it is root...
    local = api.submit(project["id"], member, cluster="local")
    assert local.status_code == 202, local.text
    # ...unless the cluster turned the fallback off: then, as root, the user must exist.
    strict = api.submit(project["id"], member, cluster="strict")
    if os.geteuid() == 0:
        assert strict.status_code == 409 and "does not exist" in strict.json()["detail"]
    else:
        assert strict.status_code == 202, strict.text  # shared-user mode: the broker's user


def test_an_existing_user_submits_to_the_cli_cluster(sites: Api, normal_user: str) -> None:
    api = sites
    r = api.post("/enterprises", json={"name": "Known", "posix_user": normal_user})
    assert r.status_code == 201, r.text
    ent = r.json()
    api.post(f"/enterprises/{ent['id']}/grants", json={"amount_pfh": 10})
    project = api.project(ent["id"])
    assert api.submit(project["id"], api.token(ent["id"]), cluster="cli").status_code == 202


def test_the_migration_names_enterprises_that_share_a_user(tmp_path: Path) -> None:
    from sqlalchemy import text

    from broker import migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0008")
    engine = make_engine(url)
    insert = text(
        "INSERT INTO enterprise (id, name, posix_user, slurm_account, status, period_kind,"
        " carry_over, current_period, created_at) VALUES (:id, :name, 'twin', :acct,"
        " 'active', 'month', 1, '', '2026-01-01 00:00:00')"
    )
    with engine.begin() as conn:
        for n in (1, 2):
            conn.execute(insert, {"id": f"{n:032x}", "name": f"E{n}", "acct": f"e_{n}"})
    with pytest.raises(RuntimeError, match="'twin' \\(2 enterprises\\)"):
        migrate.upgrade(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE enterprise SET posix_user = 'twin2' WHERE name = 'E2'"))
    engine.dispose()
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()
