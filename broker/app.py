"""``create_app(settings)``: the FastAPI application with /api/v1 and /ops mounted."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi_offline import FastAPIOffline

from . import __version__, observability
from .api import errors
from .api.batching import SubmitBatcher, writer_engine
from .api.limits import AnonymousRateLimit, RateLimiter
from .api.routes import clusters as clusters_routes
from .api.routes import (
    enterprises,
    events,
    files,
    health,
    jobs,
    me,
    projects,
    tokens,
    webhooks,
)
from .api.submit_path import SubmitFront
from .config import Settings
from .db import make_engine, make_session_factory, session_scope
from .services import brokering, clusters
from .services.token_cache import TokenCache
from .services.workspaces import WorkspaceConfig
from .web import routes as web_routes
from .web.session import COOKIE as OPS_COOKIE
from .worker import Worker, start_in_thread

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, run_worker: bool | None = None, sync_clusters: bool = True
) -> FastAPI:
    """Build the app; the worker thread runs when ``run_worker`` (default: settings) says so.

    At start-up the app writes the clusters file into the database unless
    ``sync_clusters`` is false (``brokerctl api --workers N`` does it once, before its
    processes start, so they do not race to insert the same rows).
    """
    engine = make_engine(settings.database_url)
    batch_engine = writer_engine(settings.database_url)  # the submission batches' own
    factory = make_session_factory(engine)
    read_factory = make_session_factory(engine, write=False)
    cluster_configs = settings.load_clusters()
    pool = clusters.AdapterPool(cluster_configs)
    worker = Worker(settings, factory, pool)
    want_worker = settings.worker_enabled if run_worker is None else run_worker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if sync_clusters:
            with session_scope(factory) as session:
                clusters.sync_config(session, cluster_configs)
        stop = None
        if want_worker:
            _, stop = start_in_thread(worker)
        stop_tokens = app.state.token_cache.refresher(read_factory)
        try:
            yield
        finally:
            stop_tokens()
            app.state.submit_batcher.close()
            if stop is not None:
                stop.set()
            pool.close()
            engine.dispose()
            batch_engine.dispose()

    # /docs (Swagger UI) and /redoc from the assets fastapi-offline ships, not a CDN:
    # centers are often air-gapped.
    app = FastAPIOffline(
        title="HPC Compute Broker",
        version=__version__,
        description="PFlop·h quotas, Slurm clusters and node-speed billing for a PoC center.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        # No call to the public validator: the page asks nothing of the internet.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = factory
    app.state.read_session_factory = read_factory
    app.state.adapters = pool
    app.state.worker = worker
    app.state.token_cache = TokenCache()
    app.state.token_cache.watch(factory)
    app.state.submit_batcher = SubmitBatcher(
        make_session_factory(batch_engine),
        weights=brokering.weights_from(settings),
        workspace=WorkspaceConfig.of(settings.data_dir, settings.workspace_quota_bytes),
    )
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
    app.state.anon_rate_limiter = RateLimiter(
        settings.anon_rate_limit_per_minute,
        subject="unauthenticated requests per minute from this address",
    )
    errors.install(app)
    # Submissions with a cached token are answered before the middleware stack below.
    SubmitFront(
        settings=settings,
        tokens=app.state.token_cache,
        batcher=app.state.submit_batcher,
        limiter=app.state.rate_limiter,
        handlers=app.exception_handlers,
    ).install(app)
    app.add_middleware(files.BodySizeLimitExceptUploads, max_bytes=settings.max_body_bytes)
    # Before any body is read, within the request's id and metrics.
    app.add_middleware(
        AnonymousRateLimit, limiter=app.state.anon_rate_limiter, session_cookie=OPS_COOKIE
    )
    app.add_middleware(observability.RequestContext)  # outermost: ids, access log, metrics
    observability.install_metrics_route(
        app,
        observability.make_registry(factory),
        token=settings.metrics_token,
        networks=settings.metrics_allow_networks,
    )

    api = APIRouter(prefix="/api/v1", responses=errors.ERROR_RESPONSES)
    for router in (
        health.router,
        enterprises.router,
        tokens.router,
        me.router,
        projects.router,
        jobs.router,
        files.router,
        webhooks.router,
        events.router,
        clusters_routes.router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.include_router(health.router)  # /healthz and /readyz at the root too, for probes
    app.include_router(web_routes.router)
    app.add_api_route("/", _root, methods=["GET"], include_in_schema=False)
    return app


def _root(request: Request) -> Response:
    """Where to go from ``/``: a browser is sent to the docs, a client gets the links."""
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/docs", status_code=303)
    return JSONResponse(
        {
            "name": "HPC Compute Broker",
            "version": __version__,
            "docs": "/docs",
            "redoc": "/redoc",
            "openapi": "/openapi.json",
            "api": "/api/v1",
            "dashboard": "/ops",
            "health": "/healthz",
        }
    )


def api_process_app() -> FastAPI:
    """One of ``brokerctl api --workers N``'s processes (a uvicorn factory).

    Settings come from the environment, which ``brokerctl api`` filled in from its
    own options before starting the processes.
    """
    observability.configure_logging(
        os.environ.get("BROKER_LOG_FORMAT", "json"), os.environ.get("BROKER_LOG_LEVEL", "INFO")
    )
    return create_app(Settings(), run_worker=False, sync_clusters=False)
