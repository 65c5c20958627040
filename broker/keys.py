"""Host keys and the box that seals secrets the broker must read back.

A key is the deployment's configured value when it sets one (from a secret store,
through the environment), else a random key in ``<data_dir>/<name>`` made once with
mode 0600, so every process on the host shares it and restarts keep it.

``SecretBox`` seals what cannot be hashed because the broker uses it again (a project's
webhook signing secret: HMAC needs the clear value): Fernet (AES-128-CBC with
HMAC-SHA256, from ``cryptography``) under a key derived from the host key with HKDF. A
database dump alone then reveals no secret.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

SEALED_PREFIX = "fernet:"


class SecretUnreadable(Exception):
    """A sealed value this host's key does not open."""


def host_key(data_dir: Path, name: str, configured: SecretStr | None = None) -> str:
    """The configured key, else ``data_dir/name`` (created on first use, 0600)."""
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    path = Path(data_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty; delete it to make a new key") from None
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


class SecretBox:
    """Seal and open short secrets under one host key."""

    def __init__(self, key: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"hpc-broker sealed secrets"
        ).derive(key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, clear: str) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(clear.encode()).decode()

    def open(self, stored: str) -> str:
        """The clear value; a value stored before sealing existed is returned as is."""
        if not stored.startswith(SEALED_PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise SecretUnreadable("sealed with another key than this host's") from exc
