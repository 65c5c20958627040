"""brokerctl enterprise create applies the POSIX identity rules of the API."""

from __future__ import annotations

import pwd

import pytest

from broker.services import tenants

from .._slurm import MIN_TENANT_UID
from .conftest import Cli


def _system_account() -> str:
    for pw in sorted(pwd.getpwall(), key=lambda p: p.pw_uid):
        if 0 < pw.pw_uid < MIN_TENANT_UID and pw.pw_name not in tenants.RESERVED_USERS:
            return pw.pw_name
    pytest.skip("no system account on this host")


def test_brokerctl_enterprise_create_refuses_root(cli: Cli) -> None:
    out = cli.run("enterprise", "create", "Rooted", "--posix-user", "root", code=1)
    assert "posix_user: 'root' is reserved" in out.stderr
    system = cli.run("enterprise", "create", "Sys", "--posix-user", _system_account(), code=1)
    assert "posix_user: " in system.stderr and "system account" in system.stderr
