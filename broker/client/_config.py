"""Where the client finds the broker and its token: arguments, environment, config file.

Each setting is taken from the first of: the argument; the environment
(``HPC_BROKER_URL``, ``HPC_BROKER_TOKEN``, ``HPC_BROKER_TOKEN_FILE``,
``HPC_BROKER_PROJECT``); the config file's profile (``HPC_BROKER_PROFILE``, else
``default``). The file is ``HPC_BROKER_CONFIG``, else
``$XDG_CONFIG_HOME/hpc-broker/config.toml`` (``~/.config/...``)::

    [default]
    url = "https://broker.example.org"      # /api/v1 is added when missing
    token_file = "~/.hpc-broker-token"      # or: token = "..."
    project = "6f1c...-..."                 # the default project for submit

A token is a secret: a file that holds one (the config with ``token =``, or a
``token_file``) must not be readable by group or others, as ssh demands of its keys.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import ConfigError

__all__ = ["ClientConfig", "load_config"]

API_PREFIX = "/api/v1"


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    token: str
    project_id: str | None = None
    timeout_s: float = 30.0

    def __repr__(self) -> str:  # never print the token
        return f"ClientConfig(base_url={self.base_url!r}, project_id={self.project_id!r})"


def api_url(url: str) -> str:
    """``url`` ending in ``/api/v1`` (added when missing), without a trailing slash."""
    url = url.rstrip("/")
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


def _private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} holds a token but group/others may read it (mode {stat.filemode(mode)}):"
            f" chmod 600 {path}"
        )


def _read_token_file(raw: str) -> str:
    path = Path(raw).expanduser()
    try:
        _private(path)
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise ConfigError(f"token file {path} is empty")
    return token


def _config_path(env: Mapping[str, str]) -> Path:
    if env.get("HPC_BROKER_CONFIG"):
        return Path(env["HPC_BROKER_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "hpc-broker" / "config.toml"


def _profile(env: Mapping[str, str], profile: str | None) -> dict[str, Any]:
    path = _config_path(env)
    name = profile or env.get("HPC_BROKER_PROFILE") or "default"
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        if profile or env.get("HPC_BROKER_CONFIG"):
            raise ConfigError(f"config file {path} not found") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    section = doc.get(name)
    if not isinstance(section, dict):
        if profile or name != "default":
            raise ConfigError(f"config file {path} has no [{name}] profile")
        return {}
    if "token" in section:
        _private(path)
    return section


def load_config(
    base_url: str | None = None,
    token: str | None = None,
    project_id: str | None = None,
    *,
    profile: str | None = None,
    timeout_s: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> ClientConfig:
    """The settings, each from the first place that has it (see the module's doc)."""
    env = os.environ if env is None else env
    section: dict[str, Any] | None = None

    def from_file(key: str) -> Any:
        nonlocal section
        if section is None:
            section = _profile(env, profile)
        return section.get(key)

    url = base_url or env.get("HPC_BROKER_URL") or from_file("url")
    if not url:
        raise ConfigError(
            "no broker URL: pass base_url, set HPC_BROKER_URL, or put url in the config file"
        )
    tok = token or env.get("HPC_BROKER_TOKEN")
    if not tok and env.get("HPC_BROKER_TOKEN_FILE"):
        tok = _read_token_file(env["HPC_BROKER_TOKEN_FILE"])
    if not tok:
        tok = from_file("token")
        if not tok and from_file("token_file"):
            tok = _read_token_file(str(from_file("token_file")))
    if not tok:
        raise ConfigError(
            "no token: pass token, set HPC_BROKER_TOKEN (or HPC_BROKER_TOKEN_FILE),"
            " or put token_file in the config file"
        )
    project = project_id or env.get("HPC_BROKER_PROJECT") or from_file("project")
    return ClientConfig(
        base_url=api_url(str(url)),
        token=str(tok),
        project_id=str(project) if project else None,
        timeout_s=timeout_s,
    )
