"""brokerctl: the cluster admin's command line (Typer + Rich)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from . import migrate
from .config import Settings
from .db import make_engine, make_session_factory, session_scope
from .errors import BrokerError
from .models import Role
from .services import tokens
from .services.principal import SYSTEM

app = typer.Typer(help="Drive the HPC compute broker.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")

console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _emit(data: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
    else:
        console.print(data)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    migrate_db: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Upgrade the schema first.")
    ] = True,
) -> None:
    """API, dashboard and worker in one process (the embedded default)."""
    import uvicorn

    from .app import create_app

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if migrate_db:
        migrate.upgrade(settings.database_url)
    uvicorn.run(create_app(settings, run_worker=True), host=host, port=port, log_level="info")


@app.command()
def api(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """The API and dashboard only (run a separate `brokerctl worker`)."""
    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(_settings(), run_worker=False), host=host, port=port)


@app.command()
def worker() -> None:
    """The worker only: submit, poll, settle."""
    import threading

    from .services import clusters
    from .worker import Worker

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    factory = make_session_factory(make_engine(settings.database_url))
    configs = settings.load_clusters()
    with session_scope(factory) as s:
        clusters.sync_config(s, configs)
    stop = threading.Event()
    try:
        Worker(settings, factory, clusters.AdapterPool(configs)).run_forever(stop)
    except KeyboardInterrupt:
        stop.set()


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    settings = _settings()
    migrate.upgrade(settings.database_url, revision)
    console.print(f"database at revision {migrate.current(settings.database_url)}")


@db_app.command("current")
def db_current(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show the schema revision of the database and the code's head."""
    settings = _settings()
    data = {"current": migrate.current(settings.database_url), "head": migrate.head()}
    _emit(data, as_json)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="A name for the token's holder.")],
    operator: Annotated[bool, typer.Option("--operator", help="A center operator token.")] = False,
    cluster_admin: Annotated[bool, typer.Option("--cluster-admin")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a staff token and print it (shown once)."""
    if operator == cluster_admin:
        _fail("give exactly one of --operator or --cluster-admin", 2)
    settings = _settings()
    factory = make_session_factory(make_engine(settings.database_url))
    role = Role.OPERATOR if operator else Role.CLUSTER_ADMIN
    try:
        with session_scope(factory) as s:
            row, clear = tokens.create_token(s, SYSTEM, name=name, role=role, enterprise_id=None)
    except BrokerError as exc:
        _fail(exc.detail)
    if as_json:
        _emit({"id": str(row.id), "name": name, "role": role.value, "token": clear}, True)
    else:
        sys.stdout.write(clear + "\n")


def main() -> None:
    app()
