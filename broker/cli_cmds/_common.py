"""What every brokerctl command shares: settings, the unit of work, output, exit codes.

Commands act as the SYSTEM operator principal (an admin on the broker host) and go
through the service functions, so the rules and the audit trail are the API's.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..config import ClusterConfig, Settings
from ..db import make_engine, make_session_factory, session_scope
from ..errors import BrokerError, NotFound
from ..models import Enterprise, Project
from ..services import job_refs, projects, tenants
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

#: The cluster a command acts on is its first argument, CLUSTER, in every command (``nodes
#: list alpha``, ``nodes validate alpha``, ``slurm sync alpha``, ``jobs reconcile alpha``);
#: ``--cluster`` stays accepted, hidden, where it was the spelling before. Filters of a
#: listing (``jobs list --cluster``) are options, like the listing's other filters.
ClusterPos = Annotated[
    str | None,
    typer.Argument(
        metavar="CLUSTER", help="The cluster (a name from the clusters file).", show_default=False
    ),
]
ClusterOld = Annotated[
    str | None, typer.Option("--cluster", hidden=True, help="Older spelling of CLUSTER.")
]


def cluster_name(
    positional: str | None, option: str | None, *, required: bool = True
) -> str | None:
    """CLUSTER, given as the argument or (older spelling) as ``--cluster``."""
    if positional and option and positional != option:
        fail(f"CLUSTER {positional!r} and --cluster {option!r} disagree", USAGE_ERROR)
    name = positional or option
    if name is None and required:
        fail("missing argument CLUSTER", USAGE_ERROR)
    return name


#: Root options (``brokerctl --database-url ... CMD``) override the environment.
overrides: dict[str, Any] = {}
#: The environment file the systemd units read (deploy/PRODUCTION.md): brokerctl on the
#: broker's host finds the broker's database there without being told.
SYSTEM_CONFIG = Path("/etc/broker/broker.env")


def config_file() -> Path | None:
    """``--config`` or ``$BROKER_CONFIG`` (must exist), else the host's file if present."""
    named = overrides.get("config") or os.environ.get("BROKER_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            fail(f"the config file {path} does not exist", USAGE_ERROR)
        if not os.access(path, os.R_OK):
            fail(f"the config file {path} is not readable by this user", USAGE_ERROR)
        return path
    # The host's file, when this user may read it (mode 0640, group broker).
    usable = SYSTEM_CONFIG.is_file() and os.access(SYSTEM_CONFIG, os.R_OK)
    return SYSTEM_CONFIG if usable else None


def default_data_dir() -> Path:
    """Where the embedded default keeps its database and files: per user, never the cwd."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hpc-broker"


def settings() -> Settings:
    """The broker's configuration, as ``brokerctl serve`` and every command see it.

    In order: root options, ``BROKER_*`` variables, the config file (``KEY=value``
    lines, as the systemd units' environment file). The database is
    ``database_url`` if one of them names it, else ``broker.db`` in the data directory
    (``BROKER_DATA_DIR``, else the per-user ``$XDG_DATA_HOME/hpc-broker``): never a
    path relative to wherever the command happens to run.
    """
    given = {k: v for k, v in overrides.items() if k != "config"}
    try:
        found = Settings(_env_file=config_file(), **given)
        if "data_dir" not in found.model_fields_set:
            found = found.model_copy(update={"data_dir": default_data_dir()})
        if "database_url" not in found.model_fields_set:
            db = found.data_dir.expanduser().resolve() / "broker.db"
            found = found.model_copy(update={"database_url": f"sqlite:///{db}"})
        return found
    except ValidationError as exc:
        fail(f"bad configuration: {exc.errors()[0].get('msg', exc)}", USAGE_ERROR)


def process_env(found: Settings) -> dict[str, str]:
    """``found`` as ``BROKER_*`` variables, for processes that build their own Settings."""
    data = found.model_dump(mode="json")
    out: dict[str, str] = {}
    for name in found.model_fields_set | {"database_url", "data_dir"}:
        value = getattr(found, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            text = value.get_secret_value()
        elif isinstance(data[name], list | dict):
            text = json.dumps(data[name])
        else:
            text = str(data[name])
        out[f"BROKER_{name.upper()}"] = text
    return out


def fail(message: str, code: int = DOMAIN_ERROR) -> NoReturn:
    err_console.print(
        f"[red]error:[/red] {escape(visible(message))}", highlight=False, soft_wrap=True
    )
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
        if not must_exist and missing:
            Path(db).parent.mkdir(parents=True, exist_ok=True)  # db upgrade makes the file
        if must_exist and missing:
            fail(
                f"cannot reach the database: {db} does not exist (set BROKER_DATABASE_URL or "
                "BROKER_DATA_DIR, give --config FILE, or create it with `brokerctl db upgrade`)",
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
def job_ref(session: Session, ref: str) -> uuid.UUID:
    """A job by its id or a unique prefix of it (the 8 digits tables and the dashboard show)."""
    try:
        job_refs.parse_ref(ref)
    except BrokerError as exc:
        fail(f"JOB_ID: {exc.detail}", USAGE_ERROR)
    return job_refs.resolve(session, ADMIN, ref)


def _by_prefix(ref: str, candidates: Sequence[Any], what: str) -> Any | None:
    """The one candidate whose id starts with ``ref`` (4+ hex digits), else None."""
    digits = ref.strip().lower()
    if len(digits.replace("-", "")) < 4 or not re.fullmatch(r"[0-9a-f-]+", digits):
        return None
    found = [c for c in candidates if str(c.id).startswith(digits)]
    if len(found) > 1:
        fail(f"{len(found)} {what}s have an id starting with {ref!r}; give more of it", USAGE_ERROR)
    return found[0] if found else None


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
    every = tenants.list_enterprises(session, ADMIN)
    for ent in every:
        if ref in (ent.name, ent.slurm_account):
            return ent
    found: Enterprise | None = _by_prefix(ref, every, "enterprise")
    if found is None:
        raise NotFound(f"no enterprise with id, name or account {ref!r}")
    return found


def project_ref(session: Session, ref: str) -> Project:
    """A project by id, or by a name that is unique in the center."""
    try:
        return projects.get_project(session, ADMIN, uuid.UUID(ref))
    except ValueError:
        pass
    every = projects.list_projects(session, ADMIN)
    found = [p for p in every if p.name == ref]
    if len(found) > 1:
        fail(f"{len(found)} projects are named {ref!r}; give the id", USAGE_ERROR)
    if not found:
        by_id: Project | None = _by_prefix(ref, every, "project")
        if by_id is None:
            raise NotFound(f"no project with id or name {ref!r}")
        return by_id
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


def _json_default(value: Any) -> Any:
    """ISO 8601 for times (as the API writes them), str for the rest (UUID, Path, Decimal)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(dump(value), indent=2, default=_json_default) + "\n")


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(:\d{2}(\.\d+)?)?(Z|[+-]00:00)?$")


def visible(text: str) -> str:
    """``text`` with control characters (but newlines) written as escapes (``\\x1b``):
    job reasons name files a tenant's job wrote, and a terminal would obey an escape
    sequence in one."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == "\n" else ascii(ch)[1:-1] for ch in text)


def say(text: str, *, err: bool = False, **kw: Any) -> None:
    """Print a message line as written (names in it may be a tenant's: no rich markup, and
    control characters shown as escapes)."""
    (err_console if err else console).print(visible(text), markup=False, **kw)


def cell(value: Any, *, short_ids: bool = True) -> str:
    """A table cell: ids as their first 8 digits (every id argument takes a unique
    prefix), UTC times to the minute; the full values are in ``--json``."""
    if value is None:
        return ""
    if isinstance(value, uuid.UUID):
        return str(value)[:8] if short_ids else str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    text = str(value)
    if short_ids and _UUID.match(text):
        return text[:8]
    iso = _ISO.match(text)
    if iso:
        return f"{iso[1]} {iso[2]}"
    return text


def _widths(
    columns: Sequence[str], cells: list[list[str]], budget: int
) -> tuple[list[int], set[int]]:
    """Column widths that fit ``budget``: each at least its longest word (so text wraps
    only at spaces), more where there is room; the columns cut short (with an ellipsis)
    when even the longest words do not fit."""
    texts = [[col, *(r[i] for r in cells)] for i, col in enumerate(columns)]
    natural = [max(len(line) for t in ts for line in t.splitlines() or [""]) for ts in texts]
    widths = [max((len(w) for t in ts for w in t.split()), default=1) for ts in texts]
    cut: set[int] = set()
    while sum(widths) > budget:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= 4:
            break
        cut.add(widest)
        widths[widest] = max(4, widths[widest] - (sum(widths) - budget))
    if sum(natural) <= budget:
        return natural, set()
    room = budget - sum(widths)
    for i in sorted(range(len(widths)), key=lambda i: natural[i] - widths[i]):
        grow = min(room, max(0, natural[i] - widths[i]))
        widths[i] += grow
        room -= grow
    return widths, cut


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    short_ids: bool = True,
) -> None:
    """A table that fits the terminal without breaking a word.

    Each column is at least as wide as its longest word, so cells wrap only at spaces.
    Where even that is too wide, the columns with the longest words are cut with an
    ellipsis (the full text is in ``--json``), never broken mid-word.
    """
    cells = [[visible(cell(v, short_ids=short_ids)) for v in row] for row in rows]
    # A space of padding either side of each cell and a (blank) rule between columns.
    budget = max(console.width - 3 * (len(columns) - 1), len(columns))
    widths, cut = _widths(columns, cells, budget)
    out = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for i, col in enumerate(columns):
        out.add_column(
            col,
            min_width=widths[i],
            max_width=widths[i],
            overflow="ellipsis" if i in cut else "fold",
            no_wrap=i in cut,
        )
    for row in cells:
        out.add_row(*(Text(text) for text in row))  # as written: no rich markup
    console.print(out)


def fields(title: str, data: dict[str, Any]) -> None:
    """A two-column key/value table for one object."""
    table(title, ["field", "value"], [(k, v) for k, v in data.items()], short_ids=False)


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
