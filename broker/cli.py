"""brokerctl: the cluster admin's command line (Typer + Rich).

The root holds the processes (``serve``, ``api``, ``worker``) and the schema (``db``);
the command groups live in ``broker.cli_cmds``. Every command works against the
database directly, as the SYSTEM operator, through the service functions. Exit codes:
0 ok, 1 domain error, 2 usage error, 3 the database cannot be reached.
"""

from __future__ import annotations

import logging
import os
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from . import migrate, observability
from .cli_cmds import _common as c
from .cli_cmds.billing import usage_app
from .cli_cmds.clusters import cluster_app, nodes_app
from .cli_cmds.jobs import jobs_app
from .cli_cmds.quota import quota_app
from .cli_cmds.slurm import slurm_app
from .cli_cmds.tenants import enterprise_app, project_app, token_app

app = typer.Typer(
    help="Drive the HPC compute broker: tenants, quotas, clusters, nodes and jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(enterprise_app, name="enterprise")
app.add_typer(token_app, name="token")
app.add_typer(project_app, name="project")
app.add_typer(quota_app, name="quota")
app.add_typer(cluster_app, name="cluster")
app.add_typer(nodes_app, name="nodes")
app.add_typer(jobs_app, name="jobs")
app.add_typer(slurm_app, name="slurm")
app.add_typer(usage_app, name="usage")


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(envvar="BROKER_LOG_FORMAT", help="Logs on stderr: JSON lines or text."),
]
LogLevelOpt = Annotated[str, typer.Option(envvar="BROKER_LOG_LEVEL", help="Log level.")]


@app.callback()
def root(
    database_url: Annotated[
        str | None, typer.Option(help="Database URL (default: $BROKER_DATABASE_URL).")
    ] = None,
    clusters_file: Annotated[
        Path | None, typer.Option(help="Clusters file (default: $BROKER_CLUSTERS_FILE).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="Config file of BROKER_*=value lines (default: $BROKER_CONFIG, else "
            "/etc/broker/broker.env if present). Without a database URL the database is "
            "broker.db in BROKER_DATA_DIR, else in ~/.local/share/hpc-broker."
        ),
    ] = None,
) -> None:
    c.overrides.clear()
    if config is not None:
        c.overrides["config"] = config
    if database_url is not None:
        c.overrides["database_url"] = database_url
    if clusters_file is not None:
        c.overrides["clusters_file"] = clusters_file


#: uvicorn's options for every API process: our logging (``broker.access`` logs each
#: request), and the httptools protocol writing each response in one system call.
_SERVER: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "http": "broker.api.http_protocol:CoalescingHttpToolsProtocol",
}


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    migrate_db: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Upgrade the schema first.")
    ] = True,
    log_format: LogFormatOpt = LogFormat.JSON,
    log_level: LogLevelOpt = "INFO",
) -> None:
    """API, dashboard and worker in one process (the embedded default)."""
    import uvicorn

    from .app import create_app

    settings = c.settings()
    observability.configure_logging(log_format, log_level)
    if migrate_db:
        with c.database(settings.database_url, must_exist=False):
            migrate.upgrade(settings.database_url)
    application = create_app(settings, run_worker=True)
    uvicorn.run(application, host=host, port=port, **_SERVER)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="API processes sharing the port (uvicorn workers). Rate limits are "
            "counted per process.",
        ),
    ] = 1,
    log_format: LogFormatOpt = LogFormat.JSON,
    log_level: LogLevelOpt = "INFO",
) -> None:
    """The API and dashboard only (run one `brokerctl worker` beside any number of these)."""
    import uvicorn

    from .app import create_app

    settings = c.settings()
    observability.configure_logging(log_format, log_level)
    if workers == 1:
        application = create_app(settings, run_worker=False)
        uvicorn.run(application, host=host, port=port, **_SERVER)
        return
    from .services import clusters

    with c.unit_of_work() as session:
        clusters.sync_config(session, c.load_clusters())
    # The processes build their settings from the environment: hand them ours.
    os.environ.update(c.process_env(settings))
    os.environ["BROKER_LOG_FORMAT"], os.environ["BROKER_LOG_LEVEL"] = log_format, log_level
    uvicorn.run(
        "broker.app:api_process_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        **_SERVER,
    )


@app.command()
def worker(
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this worker's /metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
    leader_poll_s: Annotated[
        float, typer.Option(min=0.05, help="How often a standby worker tries the leader lock.")
    ] = 2.0,
    log_format: LogFormatOpt = LogFormat.JSON,
    log_level: LogLevelOpt = "INFO",
) -> None:
    """The worker only: submit, poll, settle. A second one waits for the leader lock."""
    from prometheus_client import start_http_server

    from . import leader
    from .db import make_engine, make_session_factory, session_scope
    from .services import clusters
    from .worker import Worker

    settings = c.settings()
    observability.configure_logging(log_format, log_level)
    configs = c.load_clusters()
    factory = make_session_factory(make_engine(settings.database_url))
    if metrics_port is not None:
        registry = observability.make_registry(factory)
        start_http_server(metrics_port, addr=metrics_host, registry=registry)
    with c.database(settings.database_url), session_scope(factory) as s:
        clusters.sync_config(s, configs)
    stop = threading.Event()
    pool = clusters.AdapterPool(configs)
    lock = leader.for_database(settings.database_url, poll_s=leader_poll_s)
    try:
        Worker(settings, factory, pool).run_forever(stop, lock)
    except KeyboardInterrupt:
        stop.set()
    finally:
        pool.close()
        logging.getLogger(__name__).info("worker exiting")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[
        str, typer.Argument(help="Alembic revision to upgrade to (default: head).")
    ] = "head",
    as_json: c.JsonOpt = False,
) -> None:
    """Apply migrations up to REVISION (default: head); creates a SQLite file if needed."""
    url = c.settings().database_url
    with c.database(url, must_exist=False):
        migrate.upgrade(url, revision)
        current = migrate.current(url)
    if as_json:
        c.print_json({"current": current, "head": migrate.head()})
    else:
        c.say(f"database at revision {current}")


@db_app.command("current")
def db_current(as_json: c.JsonOpt = False) -> None:
    """Show the schema revision of the database and the code's head."""
    url = c.settings().database_url
    with c.database(url):
        data: dict[str, Any] = {"current": migrate.current(url), "head": migrate.head()}
    data["up_to_date"] = data["current"] == data["head"]
    if as_json:
        c.print_json(data)
    else:
        c.fields("schema", data)


def main() -> None:
    app()
