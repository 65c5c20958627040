"""Observability: Prometheus metrics, JSON logs with a request id, instrumented adapters.

Process-wide metric objects live here (counters and histograms are per process, as
Prometheus expects: scrape every API process and the worker). Figures that belong to
the database (jobs by state, ledger totals, cluster status) are computed at scrape
time by ``DatabaseCollector`` with cheap ``GROUP BY`` queries, so every API process
reports the same numbers and nothing needs a background thread.

Imports stay at the services level and below (models, scheduler_adapters): the
adapter pool in ``services.clusters`` wraps its adapters here.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import io
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, TypeVar

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.routing import Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import scheduler_adapters as sa_

from .models import Cluster, ClusterStatus, Job, JobStatus
from .units import units_to_pfh

log = logging.getLogger(__name__)
access_log = logging.getLogger("broker.access")

T = TypeVar("T")

# -- process-wide metrics (registered per exposition registry, see ``make_registry``) --
HTTP_REQUESTS = Counter(
    "broker_http_requests",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
    registry=None,
)
HTTP_LATENCY = Histogram(
    "broker_http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    registry=None,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ADAPTER_CALLS = Counter(
    "broker_adapter_calls",
    "Scheduler adapter calls by cluster and method.",
    ["cluster", "method"],
    registry=None,
)
ADAPTER_ERRORS = Counter(
    "broker_adapter_errors",
    "Scheduler adapter calls that raised, by cluster, method and error class.",
    ["cluster", "method", "error"],
    registry=None,
)
ADAPTER_LATENCY = Histogram(
    "broker_adapter_call_duration_seconds",
    "Scheduler adapter call latency by cluster and method.",
    ["cluster", "method"],
    registry=None,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
SCHEDULER_REQUESTS = Counter(
    "broker_scheduler_requests",
    "Requests the broker sent each cluster's scheduler (a tool run or a REST call), by"
    " cluster and request: the load the broker puts on a controller.",
    ["cluster", "request"],
    registry=None,
)
WORKER_LAST_PASS = Gauge(
    "broker_worker_last_pass_timestamp_seconds",
    "Unix time at which the worker last finished a pass (alert on time() minus this).",
    registry=None,
)
WORKER_PASS_DURATION = Histogram(
    "broker_worker_pass_duration_seconds",
    "Duration of one worker pass (submit, cancel, poll).",
    registry=None,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
WORKER_LAG = Gauge(
    "broker_worker_loop_lag_seconds",
    "How much later than its interval the last pass started (0 when on time).",
    registry=None,
)
WORKER_LEADER = Gauge(
    "broker_worker_leader",
    "1 while this worker holds the leader lock and works, 0 while it waits.",
    registry=None,
)
WORKER_EVENTS = Counter(
    "broker_worker_job_events",
    "Job transitions made by the worker (submitted, adopted, rejected, retried, ...).",
    ["event"],
    registry=None,
)
WORKER_PASS_ERRORS = Counter(
    "broker_worker_pass_errors",
    "Worker passes that failed with an unexpected exception.",
    registry=None,
)

SUBMIT_BATCH_JOBS = Histogram(
    "broker_submit_batch_jobs",
    "Submissions per batch of this API process (one transaction each: grows with load).",
    registry=None,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SUBMIT_BATCH_SECONDS = Histogram(
    "broker_submit_batch_duration_seconds",
    "Time the batch writer spent on a batch: its transaction, commit and answers.",
    registry=None,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
SUBMIT_BATCH_RERUNS = Counter(
    "broker_submit_batch_reruns",
    "Batches run again: 'key' to look up a stored Idempotency-Key its insert met, "
    "'deadlock' as a deadlock's victim.",
    ["reason"],
    registry=None,
)

PROCESS_METRICS = (
    HTTP_REQUESTS,
    HTTP_LATENCY,
    ADAPTER_CALLS,
    ADAPTER_ERRORS,
    ADAPTER_LATENCY,
    SCHEDULER_REQUESTS,
    WORKER_LAST_PASS,
    WORKER_PASS_DURATION,
    WORKER_LAG,
    WORKER_LEADER,
    WORKER_EVENTS,
    WORKER_PASS_ERRORS,
    SUBMIT_BATCH_JOBS,
    SUBMIT_BATCH_SECONDS,
    SUBMIT_BATCH_RERUNS,
)


class DatabaseCollector:
    """Jobs by state, ledger totals and cluster status, read from the database per scrape."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # no describe-time query: collected lazily at scrape time

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("broker_database_up", "1 if the database answered this scrape.")
        try:
            with self.factory() as session:
                families = list(self._families(session))
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("metrics: database unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, session: Session) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("broker_jobs", "Jobs by state.", labels=["state"])
        counts = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        for state in JobStatus:
            jobs.add_metric([state.value], counts.get(state, 0))
        yield jobs
        # Imported here: services import this module (a cycle at import time otherwise).
        from .services.reports.center import center_totals

        # Summed in parts: a center's totals can leave 64 bits where one enterprise's cannot.
        totals = center_totals(session)
        granted, held, charged = totals.granted_units, totals.held_units, totals.charged_units
        ledger = GaugeMetricFamily(
            "broker_ledger_pfh",
            "Center-wide ledger totals over all enterprises, in PFlop·h.",
            labels=["kind"],
        )
        for kind, units in (
            ("granted", granted),
            ("held", held),
            ("charged", charged),
            ("available", granted - held - charged),
        ):
            ledger.add_metric([kind], units_to_pfh(int(units)))
        yield ledger
        up = GaugeMetricFamily(
            "broker_cluster_up",
            "1 if the worker's last refresh reached the cluster.",
            labels=["cluster"],
        )
        for name, status in session.execute(
            select(Cluster.name, Cluster.status).where(Cluster.enabled)
        ):
            up.add_metric([name], 1 if status is ClusterStatus.UP else 0)
        yield up


def make_registry(factory: sessionmaker[Session] | None = None) -> CollectorRegistry:
    """A registry with the process metrics and, given a session factory, the database ones."""
    registry = CollectorRegistry(auto_describe=False)
    for metric in PROCESS_METRICS:
        registry.register(metric)
    if factory is not None:
        registry.register(DatabaseCollector(factory))
    return registry


# -- adapters -------------------------------------------------------------------------
class InstrumentedAdapter(sa_.SchedulerAdapter):
    """A scheduler adapter that counts, times and logs every call of the one it wraps."""

    def __init__(self, inner: sa_.SchedulerAdapter) -> None:
        super().__init__(inner.cluster)
        self.inner = inner
        self.kind = inner.kind
        self.supports_dependencies = inner.supports_dependencies
        cluster = inner.cluster
        inner.on_request = lambda request: SCHEDULER_REQUESTS.labels(cluster, request).inc()

    def _call(self, method: str, fn: Callable[[], T]) -> T:
        ADAPTER_CALLS.labels(self.cluster, method).inc()
        started = time.perf_counter()
        try:
            return fn()
        except Exception as exc:
            ADAPTER_ERRORS.labels(self.cluster, method, type(exc).__name__).inc()
            raise
        finally:
            ADAPTER_LATENCY.labels(self.cluster, method).observe(time.perf_counter() - started)

    def submit(self, spec: sa_.JobSpec) -> str:
        return self._call("submit", lambda: self.inner.submit(spec))

    def status(self, job_ids: Sequence[str]) -> dict[str, sa_.JobInfo]:
        return self._call("status", lambda: self.inner.status(job_ids))

    def cancel(self, job_id: str) -> None:
        self._call("cancel", lambda: self.inner.cancel(job_id))

    def ping(self) -> sa_.ClusterInfo:
        return self._call("ping", self.inner.ping)

    def nodes(self) -> list[sa_.NodeInfo]:
        return self._call("nodes", self.inner.nodes)

    def list_tagged(self, since: datetime) -> dict[str, sa_.JobInfo]:
        return self._call("list_tagged", lambda: self.inner.list_tagged(since))

    def drain(self, node: str, reason: str) -> None:
        self._call("drain", lambda: self.inner.drain(node, reason))

    def resume(self, node: str) -> None:
        self._call("resume", lambda: self.inner.resume(node))

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # adapter-specific attributes, read through


# -- worker ---------------------------------------------------------------------------
def record_pass(counts: dict[str, int], duration_s: float, lag_s: float) -> None:
    """Record one finished worker pass: its duration, lag and the job events it made."""
    WORKER_PASS_DURATION.observe(duration_s)
    WORKER_LAG.set(max(0.0, lag_s))
    WORKER_LAST_PASS.set(time.time())
    for event, n in counts.items():
        if n:
            WORKER_EVENTS.labels(event).inc(n)


# -- logs and request ids -------------------------------------------------------------
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    """Stamp each record with the id of the request being served (at emit time)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            rid = request_id_var.get()
            if rid is not None:
                record.request_id = rid
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        try:  # orjson: a fifth of json's time, for the line every request writes
            return orjson.dumps(data, default=str).decode()
        except TypeError:  # what orjson refuses (an int past 64 bits, a non-str key)
            return json.dumps(data, default=str, ensure_ascii=False)


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines written through a buffer, not a system call each: flushed within
    ``flush_s`` of being written (a thread of its own), at once for a WARNING or worse,
    and at exit (``logging.shutdown``), as nginx's ``access_log ... buffer= flush=``.
    The access log writes a line per request: its flush was a quarter of what the
    line cost. A process killed outright loses at most the last ``flush_s`` of lines."""

    def __init__(self, fd: int, flush_s: float = 0.2) -> None:
        raw = open(fd, "wb", buffering=0, closefd=False)  # noqa: SIM115 (the handler's)
        stream = io.TextIOWrapper(
            io.BufferedWriter(raw, 1 << 16), encoding="utf-8", errors="backslashreplace"
        )
        super().__init__(stream)
        self.flush_s = flush_s
        self._pending = threading.Event()
        self._flusher: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.flush()
        elif not self._pending.is_set():
            self._pending.set()
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_soon, name="log-flush", daemon=True
                )
                self._flusher.start()

    def close(self) -> None:
        """Write what is buffered; the file descriptor stays open (it is stderr's)."""
        self.acquire()
        try:
            self.stream.close()  # flushes; the descriptor is not closed
        finally:
            self.release()
            super().close()

    def _flush_soon(self) -> None:
        while True:
            self._pending.wait()
            time.sleep(self.flush_s)
            self._pending.clear()
            try:
                self.flush()
            except ValueError:  # closed (at exit)
                return


def _stderr_handler() -> logging.StreamHandler:  # type: ignore[type-arg]
    """A buffered handler on stderr's file, or a plain one where stderr is not a file
    (a test's capture)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return logging.StreamHandler(sys.stderr)
    return BufferedStreamHandler(fd)


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Log to stderr as JSON lines (``fmt="json"``) or plain text, for every logger."""
    # No record field any line here shows: skip reading them for each record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = _stderr_handler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        old.flush()  # a buffered one's lines first
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # broker.access logs requests


#: The label of a request that matched no route (a 404 from the router itself).
UNMATCHED = "unmatched"
#: Methods labelled as themselves; any other (HTTP allows made-up ones) is "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUSES = frozenset(int(s) for s in HTTPStatus)
#: Most route objects a ``RouteTemplates`` remembers (an app has a few hundred).
_MAX_ROUTES = 4096
#: Most (method, route, status) series a ``RequestContext`` keeps at hand.
_MAX_SERIES = 4096


def method_label(method: str) -> str:
    return method if method in _METHODS else "other"


def status_label(status: int) -> str:
    """The status as itself when HTTP defines it, else its class ("4xx") or "other"."""
    if status in _STATUSES:
        return str(status)
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


class RouteTemplates:
    """The full template of the route a request matched, never its path.

    The router leaves the route it matched in ``scope["route"]`` (for a 405, the route
    whose path matched), but that route's own ``path`` lacks the prefixes it was
    included or mounted under (``/jobs/{job_id}``, included under ``/api/v1``), and one
    route may be included twice (the probes, at ``/healthz`` and ``/api/v1/healthz``).
    So the table maps each route object, found by walking the application's routes (the
    included routers' effective routes and every ``Mount`` beneath), to its full
    templates; of several, the one whose pattern matches the request's path wins. A
    file under a mounted ``StaticFiles`` is ``/mount/{path:path}``, a route of a mounted
    application ``/mount/items/{item_id}``; a request no route matched is ``unmatched``.
    The table is bounded by the application's routes, not by its traffic.
    """

    def __init__(self) -> None:
        self._table: dict[int, tuple[object, list[tuple[str, re.Pattern[str]]]]] = {}
        self._strays: dict[int, tuple[object, str]] = {}  # matched, not found in the app

    def of(self, scope: Scope, app: Any) -> str:
        """The template for a finished request; ``app`` is the top application."""
        # A mount's application is the endpoint: FastAPI sets no "route" for a mount.
        matched = scope.get("route") or scope.get("endpoint")
        if matched is None:
            return UNMATCHED
        known = self._table.get(id(matched))
        if known is None or known[0] is not matched:
            stray = self._strays.get(id(matched))
            if stray is not None and stray[0] is matched:
                return stray[1]
            self._table = _route_table(getattr(app, "routes", ()))  # routes added since
            known = self._table.get(id(matched))
            if known is None or known[0] is not matched:  # not reachable from the app
                own = str(getattr(scope.get("route"), "path", "")) or UNMATCHED
                if len(self._strays) < _MAX_ROUTES:
                    self._strays[id(matched)] = (matched, own)
                return own
        templates = known[1]
        if len(templates) > 1:
            path = str(scope.get("path", ""))
            for template, pattern in templates:
                if pattern.match(path):
                    return template
        return templates[0][0]


def _route_table(
    routes: Sequence[Any], prefix: str = "", table: dict[int, Any] | None = None
) -> dict[int, tuple[object, list[tuple[str, re.Pattern[str]]]]]:
    """id of a route, or of its endpoint -> (it, [(full template, its pattern), ...])."""
    table = {} if table is None else table
    for route, path in _effective_routes(routes):
        if len(table) >= _MAX_ROUTES:
            break
        full = prefix + path
        endpoint: Any
        if isinstance(route, Mount):  # whatever lies beneath it: one label for the mount
            template, endpoint = f"{full}/{{path:path}}", route.app
            _route_table(route.routes, full, table)
        elif path:
            template, endpoint = full, getattr(route, "endpoint", None)
        else:
            continue
        for key in (route, endpoint):
            if key is not None:
                entry = table.setdefault(id(key), (key, []))
                if all(t != template for t, _ in entry[1]):
                    entry[1].append((template, compile_path(template)[0]))
    return table


def _effective_routes(routes: Sequence[Any]) -> Iterator[tuple[Any, str]]:
    """(route as the router puts it in ``scope["route"]``, its path with include prefixes)."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.130: lazy includes
    except ImportError:  # pragma: no cover - older FastAPI copies included routes, prefixed
        for route in routes:
            yield route, str(getattr(route, "path", "") or "")
        return
    for context in iter_route_contexts(routes):
        yield context.original_route, str(context.path or "")


#: Scope key of a request that a ``RequestContext`` already observes.
OBSERVED = "broker.observed"


class RequestContext:
    """ASGI middleware: request id (accepted or made), access log, HTTP metrics.

    An incoming ``X-Request-ID`` made of safe characters is kept, else a new one is
    made; either way it is echoed in the response header and put on every log record
    emitted while the request runs. Metrics are labelled by route template
    (``/api/v1/jobs/{job_id}``, see ``RouteTemplates``), never by raw path, and by method
    and status from bounded sets: whatever a client sends, the number of series is
    bounded by the app's routes (issue 24: paths as labels let anonymous requests grow
    the process and ``/metrics`` without bound, and listed tenants' paths and ids there).
    The access log keeps the raw path: a log line is written out, not kept.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = RouteTemplates()
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or OBSERVED in scope:
            await self.app(scope, receive, send)
            return
        await self.observe(self.app, scope, receive, send)

    async def observe(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve an HTTP request with ``app`` within its id, access log and metrics. A
        request observed here is marked (``OBSERVED``): an instance further in passes it
        on as it is (the submissions' front observes its requests before the app's
        middleware, which it may hand a request to)."""
        scope[OBSERVED] = True
        incoming = next((v for k, v in scope.get("headers", []) if k == b"x-request-id"), b"")
        text = incoming.decode("latin-1")
        rid = text if _REQUEST_ID.match(text) else os.urandom(16).hex()  # uuid4().hex's size
        token = request_id_var.set(rid)
        top = scope.get("app")  # the top application: mounted ones replace it in scope
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route, method = self.routes.of(scope, top), scope.get("method", "")
            count, latency = self._series(method, route, status)
            count.inc()
            latency.observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                # The record made and handled as ``Logger.info`` would, less its search
                # of the stack for the caller's file and line, which no line here shows.
                extra = {
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1e3, 2),
                    "request_id": rid,
                }
                args = (method, scope.get("path", ""), status)
                record = access_log.makeRecord(
                    access_log.name, logging.INFO, __file__, 0, "%s %s %s", args, None, extra=extra
                )
                access_log.handle(record)
            request_id_var.reset(token)

    def _series(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The request's counter and latency series (prometheus_client's ``labels()``
        takes a lock and builds its key each call; the sets are bounded, see the class)."""
        m = method_label(method)
        key = (m, route, status)
        found = self._children.get(key)
        if found is None:
            found = (
                HTTP_REQUESTS.labels(m, route, status_label(status)),
                HTTP_LATENCY.labels(m, route),
            )
            if len(self._children) >= _MAX_SERIES:
                self._children.clear()
            self._children[key] = found
        return found


def install_metrics_route(
    app: Any,
    registry: CollectorRegistry,
    *,
    token: SecretStr | None = None,
    networks: Sequence[IPv4Network | IPv6Network] = (),
) -> None:
    """Serve ``registry`` at ``GET /metrics`` to the metrics scraper only.

    A request is served when it bears ``Authorization: Bearer <token>`` (compared in
    constant time) or comes from one of ``networks``. Any other gets the very 404 an
    unknown path gets: a scanner learns nothing, not even that a token would help.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.exceptions import HTTPException
    from starlette.responses import Response

    def metrics(request: Request) -> Response:
        if not scraper_allowed(request, token, networks):
            raise HTTPException(404)  # answered by the app's handler, as for any path
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


def scraper_allowed(
    request: Request, token: SecretStr | None, networks: Sequence[IPv4Network | IPv6Network]
) -> bool:
    """Whether ``request`` bears the metrics token or comes from an allowed network."""
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value()
        # Digests first: compare_digest would leak the token's length through timing.
        if scheme.lower() == "bearer" and hmac.compare_digest(
            hashlib.sha256(given.strip().encode()).digest(),
            hashlib.sha256(expected.encode()).digest(),
        ):
            return True
    host = request.client.host if request.client is not None else ""
    try:
        address = ip_address(host)
    except ValueError:  # no address (a unix socket, a test client): not in any network
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
