"""What every brokerctl command shares: settings, the unit of work, output, exit codes.

Commands act as the SYSTEM operator principal (an admin on the broker host) and go
through the service functions, so the rules and the audit trail are the API's.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..config import ClusterConfig, Settings
from ..db import make_engine, make_session_factory, session_scope
from ..errors import BrokerError, NotFound
from ..models import Enterprise, Project
from ..services import projects, tenants
from ..services.principal import SYSTEM, Principal
from ..units import pfh_to_units

OK, DOMAIN_ERROR, USAGE_ERROR, DATABASE_ERROR = 0, 1, 2, 3
ADMIN: Principal = SYSTEM

console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change on the cluster; change nothing.")
]

#: Root options (``brokerctl --database-url ... CMD``) override the environment.
overrides: dict[str, Any] = {}


def settings() -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        fail(f"bad configuration: {exc.errors()[0].get('msg', exc)}", USAGE_ERROR)


def fail(message: str, code: int = DOMAIN_ERROR) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database URL>"


def engine_for(url: str, *, must_exist: bool = True) -> Engine:
    """An engine that fails fast: no new SQLite file, a short PostgreSQL connect timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        missing = db and db != ":memory:" and not db.startswith("file:") and not Path(db).exists()
        if must_exist and missing:
            fail(
                f"cannot reach the database: {db} does not exist "
                "(set BROKER_DATABASE_URL, or create it with `brokerctl db upgrade`)",
                DATABASE_ERROR,
            )
        return make_engine(url)
    return make_engine(url, connect_args={"connect_timeout": 5}, pool_size=2, max_overflow=0)


def _db_message(exc: SQLAlchemyError, url: str) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:300]
    hint = ""
    if "no such table" in first or ("relation" in first and "does not exist" in first):
        hint = " (is the schema migrated? run `brokerctl db upgrade`)"
    return f"cannot reach the database at {safe_url(url)}: {first}{hint}"


@contextmanager
def database(url: str | None = None, *, must_exist: bool = True) -> Iterator[Engine]:
    """An engine for one command, with database failures turned into exit code 3."""
    url = url or settings().database_url
    engine = engine_for(url, must_exist=must_exist)
    try:
        yield engine
    except IntegrityError as exc:
        fail(f"conflict: {str(exc.orig).splitlines()[0]}", DOMAIN_ERROR)
    except DBAPIError as exc:
        fail(_db_message(exc, url), DATABASE_ERROR)
    finally:
        engine.dispose()


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """One transaction: committed on success; domain errors exit 1, database errors 3."""
    with database() as engine:
        try:
            with session_scope(make_session_factory(engine)) as session:
                yield session
        except BrokerError as exc:
            fail(f"{type(exc).__name__}: {exc.detail}", DOMAIN_ERROR)


def load_clusters() -> list[ClusterConfig]:
    try:
        return settings().load_clusters()
    except (OSError, ValueError) as exc:  # ValidationError is a ValueError
        fail(f"cannot load the clusters file: {exc}", DOMAIN_ERROR)


# -- references ----------------------------------------------------------------------
def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{what} must be a UUID, got {value!r}", USAGE_ERROR)


def enterprise_ref(session: Session, ref: str) -> Enterprise:
    """An enterprise by id, name or Slurm account."""
    try:
        return tenants.get_enterprise(session, ADMIN, uuid.UUID(ref))
    except ValueError:
        pass
    for ent in tenants.list_enterprises(session, ADMIN):
        if ref in (ent.name, ent.slurm_account):
            return ent
    raise NotFound(f"no enterprise with id, name or account {ref!r}")


def project_ref(session: Session, ref: str) -> Project:
    """A project by id, or by a name that is unique in the center."""
    try:
        return projects.get_project(session, ADMIN, uuid.UUID(ref))
    except ValueError:
        pass
    found = [p for p in projects.list_projects(session, ADMIN) if p.name == ref]
    if len(found) > 1:
        fail(f"{len(found)} projects are named {ref!r}; give the id", USAGE_ERROR)
    if not found:
        raise NotFound(f"no project with id or name {ref!r}")
    return found[0]


def units(amount_pfh: str, option: str = "--pfh") -> int:
    try:
        return pfh_to_units(amount_pfh)
    except ValueError as exc:
        fail(f"{option}: {exc}", USAGE_ERROR)


# -- output --------------------------------------------------------------------------
def dump(value: Any) -> Any:
    """JSON-ready data from read models (as the API shapes them), lists or dicts."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(dump(value), indent=2, default=str) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    out = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        out.add_column(col, overflow="fold")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    console.print(out)


def fields(title: str, data: dict[str, Any]) -> None:
    """A two-column key/value table for one object."""
    table(title, ["field", "value"], [(k, v) for k, v in data.items()])


def progress(as_json: bool = False) -> Progress:
    """A progress bar on stderr, shown only to a person at a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )
