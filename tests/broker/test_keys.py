"""Host keys and sealed secrets (broker.keys)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from broker.keys import SecretBox, SecretUnreadable, host_key


def test_host_key_is_made_once_private_and_reused(tmp_path: Path) -> None:
    first = host_key(tmp_path / "data", "secrets.key")
    path = tmp_path / "data" / "secrets.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64 and host_key(tmp_path / "data", "secrets.key") == first
    assert host_key(tmp_path / "data", "secrets.key", SecretStr("vault")) == "vault"


def test_sealed_values_open_only_under_their_key() -> None:
    box = SecretBox("k1")
    sealed = box.seal("whsec_abc")
    assert sealed.startswith("fernet:") and "whsec_abc" not in sealed
    assert box.seal("whsec_abc") != sealed  # random IV: equal secrets do not look equal
    assert box.open(sealed) == "whsec_abc"
    with pytest.raises(SecretUnreadable):
        SecretBox("k2").open(sealed)
    with pytest.raises(SecretUnreadable):
        box.open(sealed[:-4] + "AAAA")  # tampered


def test_values_stored_before_sealing_are_read_as_they_are() -> None:
    assert SecretBox("k1").open("whsec_legacy") == "whsec_legacy"
