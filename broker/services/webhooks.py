"""Webhooks: subscriptions, the project's signing secret, and sending the outbox.

The outbox rows (``JobEvent`` and one ``WebhookDelivery`` per subscriber) are written
in the transaction that changes a job's state (see ``services.outbox``). The worker's
``deliver_due`` sends them with short timeouts, in event order per target (a target
never sees an event before an earlier one it has not yet received), and retries a
failed delivery with exponential backoff until ``webhook_max_attempts``.

Each request carries ``X-Broker-Timestamp: <unix seconds>`` and
``X-Broker-Signature: sha256=<hex>``, the HMAC-SHA256 of ``timestamp + "." + body``
with the project's secret: a receiver checks the signature and rejects old timestamps
(replays).

Destinations are public addresses only (no SSRF into the center's own network), except
networks the operator allows (``BROKER_WEBHOOK_ALLOW_NETWORKS``): checked when a webhook
or a job's ``callback_url`` is created (its host resolved, within a short timeout: a name
that does not resolve now is a 422 too, most likely a typo) and again at each delivery,
which connects to the very address it checked. At delivery a name that does not resolve
is retried like any other failure; a non-public address is final.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..config import Settings
from ..db import session_scope
from ..errors import InvalidInput, NotFound
from ..keys import SecretBox, SecretUnreadable, host_key
from ..models import (
    DeliveryStatus,
    Job,
    JobEvent,
    JobIO,
    JobStatus,
    Project,
    ProjectSecret,
    Webhook,
    WebhookDelivery,
)
from . import audit, projects
from .outbox import job_snapshot
from .principal import Principal

log = logging.getLogger(__name__)

MAX_WEBHOOKS_PER_PROJECT = 20
BATCH = 200
_STATES = {s.value for s in JobStatus}


#: Seconds a creation-time check waits for the URL's host to resolve.
RESOLVE_TIMEOUT_S = 2.0
#: Name lookups running at once for creation-time checks (each in a thread of its own,
#: as getaddrinfo cannot be interrupted); one more is refused rather than queued.
_LOOKUPS = threading.BoundedSemaphore(16)


def check_url(url: str, field: str = "url", *, allow: Sequence[Network] | None = None) -> str:
    """An absolute http(s) URL with a host and no credentials, whose host resolves now,
    to public addresses or ones in ``allow`` (default: ``ALLOW_NETWORKS``, the request's
    settings): else 422 naming ``field``."""
    check_syntax(url, field)
    networks = ALLOW_NETWORKS.get() if allow is None else allow
    try:
        pin_destination(url, networks, timeout_s=RESOLVE_TIMEOUT_S)
    except Unresolvable as exc:
        raise InvalidInput(field, f"{exc}; is the host name right?") from exc
    except RefusedDestination as exc:
        host = urlsplit(url).hostname
        raise InvalidInput(
            field,
            f"{host} is not a public address (an operator may allow a network with"
            " BROKER_WEBHOOK_ALLOW_NETWORKS)",
        ) from exc
    return url


def check_syntax(url: str, field: str = "url") -> str:
    """Only absolute http(s) URLs with a host and no credentials."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInput(field, "is not a URL") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(field, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidInput(field, "must name a host")
    if parts.username or parts.password:
        raise InvalidInput(field, "must not carry credentials")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidInput(field, "must not contain whitespace or control characters")
    return url


Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Networks allowed besides public addresses, for checks made without the settings at
#: hand (``services.staging`` checks a job's ``callback_url``): each API request sets
#: it from the app's settings (``api.deps.get_settings``). Unset: public addresses only.
ALLOW_NETWORKS: ContextVar[Sequence[Network]] = ContextVar("webhook_allow_networks", default=())


class RefusedDestination(Exception):
    """The URL's host is not a public address and not in an allowed network."""


class Unresolvable(RefusedDestination):
    """The URL's host name did not resolve (now): at delivery, worth a retry."""


def _resolve(host: str, port: int, timeout_s: float | None) -> list[Any]:
    """``getaddrinfo``, given up on after ``timeout_s`` (None: wait as long as it takes)."""

    def lookup() -> list[Any]:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)

    try:
        if timeout_s is None:
            return lookup()
        if not _LOOKUPS.acquire(timeout=timeout_s):
            raise Unresolvable(f"cannot resolve {host!r} now: too many lookups at once")
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["infos"] = lookup()
            except BaseException as exc:  # handed to the waiting caller
                box["error"] = exc
            finally:
                _LOOKUPS.release()

        worker = threading.Thread(target=run, name="webhook-dns", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            raise Unresolvable(f"{host!r} did not resolve within {timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        infos: list[Any] = box["infos"]
        return infos
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"cannot resolve {host!r}: {exc}") from exc


def _allowed(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: Sequence[Network]) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global or any(addr in net for net in allow)


def pin_destination(
    url: str, allow: Sequence[Network], *, timeout_s: float | None = None
) -> tuple[str, str, str]:
    """Resolve ``url``'s host once and check every address it has; pick the first.

    Returns (URL with the address in place of the host, Host header, TLS server name).
    Connecting to the checked address, not to the name again, leaves no window for a
    DNS answer that changes in between (rebinding). Raises ``RefusedDestination``, or
    ``Unresolvable`` (one of them) when the name does not resolve.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = _resolve(host, port, timeout_s)
    addrs = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    bad = sorted({str(a) for a in addrs if not _allowed(a, allow)})
    if bad or not addrs:
        raise RefusedDestination(
            f"{host} resolves to {', '.join(bad) or 'nothing'}: not a public address (an"
            " operator may allow a network with BROKER_WEBHOOK_ALLOW_NETWORKS)"
        )
    literal = f"[{addrs[0]}]" if addrs[0].version == 6 else str(addrs[0])
    netloc = f"{literal}:{port}"
    pinned = parts._replace(netloc=netloc).geturl()
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return pinned, host_header, host


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _member_project(session: Session, principal: Principal, project_id: uuid.UUID) -> Project:
    project = projects.get_project(session, principal, project_id)
    principal.require_member_of(project.enterprise_id, "project")
    return project


def secret_box(settings: Settings) -> SecretBox:
    """The box that seals project secrets: ``BROKER_SECRETS_KEY``, else the host's key file."""
    return SecretBox(host_key(settings.data_dir, "secrets.key", settings.secrets_key))


def _new_secret(session: Session, project: Project, box: SecretBox) -> str:
    """A new signing secret: returned in clear (shown once), stored sealed."""
    clear = "whsec_" + secrets.token_urlsafe(32)
    row = session.get(ProjectSecret, project.id)
    if row is None:
        session.add(ProjectSecret(project_id=project.id, secret=box.seal(clear)))
    else:
        row.secret = box.seal(clear)
    return clear


def create_webhook(
    session: Session,
    principal: Principal,
    project_id: uuid.UUID,
    url: str,
    events: list[str] | None,
    box: SecretBox,
    *,
    allow: Sequence[Network] | None = None,
) -> tuple[Webhook, str | None]:
    """Subscribe ``url``; the project's secret is returned when this call created it.

    ``url`` is checked first (``check_url``: it resolves, to allowed addresses), before
    the database is touched: its name lookup waits on no lock.
    """
    check_url(url, allow=allow)
    project = _member_project(session, principal, project_id)
    for i, name in enumerate(events or []):
        if name not in _STATES:
            states = ", ".join(sorted(_STATES))
            raise InvalidInput(f"events[{i}]", f"must be a job state ({states})")
    count = len(list(session.scalars(select(Webhook.id).where(Webhook.project_id == project.id))))
    if count >= MAX_WEBHOOKS_PER_PROJECT:
        raise InvalidInput("url", f"a project has at most {MAX_WEBHOOKS_PER_PROJECT} webhooks")
    secret = None if session.get(ProjectSecret, project.id) else _new_secret(session, project, box)
    hook = Webhook(
        project_id=project.id,
        url=url,
        events=sorted(set(events or [])),
        created_by=principal.actor,
    )
    session.add(hook)
    session.flush()
    audit.record(
        session,
        principal,
        "webhook.create",
        "webhook",
        hook.id,
        enterprise_id=project.enterprise_id,
        url=url,
    )
    return hook, secret


def rotate_secret(
    session: Session, principal: Principal, project_id: uuid.UUID, box: SecretBox
) -> str:
    """Create or replace the project's signing secret; shown once."""
    project = _member_project(session, principal, project_id)
    clear = _new_secret(session, project, box)
    audit.record(
        session,
        principal,
        "webhook.secret",
        "project",
        project.id,
        enterprise_id=project.enterprise_id,
    )
    return clear


def require_secret(session: Session, project_id: uuid.UUID, field: str) -> None:
    if session.get(ProjectSecret, project_id) is None:
        raise InvalidInput(
            field,
            "the project has no webhook secret to sign with; create one with "
            "POST /projects/{id}/webhooks/secret (or register a webhook) first",
        )


def list_webhooks(session: Session, principal: Principal, project_id: uuid.UUID) -> list[Webhook]:
    project = projects.get_project(session, principal, project_id)
    query = select(Webhook).where(Webhook.project_id == project.id).order_by(Webhook.created_at)
    return list(session.scalars(query))


def delete_webhook(
    session: Session, principal: Principal, project_id: uuid.UUID, webhook_id: uuid.UUID
) -> None:
    project = _member_project(session, principal, project_id)
    hook = session.get(Webhook, webhook_id)
    if hook is None or hook.project_id != project.id:
        raise NotFound("webhook not found")
    session.delete(hook)
    audit.record(
        session,
        principal,
        "webhook.delete",
        "webhook",
        hook.id,
        enterprise_id=project.enterprise_id,
    )


def list_deliveries(
    session: Session,
    principal: Principal,
    project_id: uuid.UUID,
    *,
    job_id: uuid.UUID | None = None,
    limit: int = 100,
) -> list[tuple[WebhookDelivery, JobEvent]]:
    """Newest first: what was sent where, how many attempts, and how the last one went."""
    project = projects.get_project(session, principal, project_id)
    query = (
        select(WebhookDelivery, JobEvent)
        .join(JobEvent, JobEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.project_id == project.id)
    )
    if job_id is not None:
        query = query.where(WebhookDelivery.job_id == job_id)
    rows = session.execute(query.order_by(WebhookDelivery.id.desc()).limit(limit))
    return [(d, e) for d, e in rows]


def event_body(ev: JobEvent) -> bytes:
    doc = {
        "type": "job.state_changed",
        "event_id": ev.id,
        "state": ev.state,
        "previous_state": ev.previous_state,
        "at": ev.at.isoformat(),
        "job": ev.payload,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class _Send:
    id: int
    target: str
    url: str
    due: bool
    body: bytes
    secret: str | None
    event_id: int


def _pending(session: Session, now: datetime) -> list[_Send]:
    query = (
        select(WebhookDelivery, JobEvent, ProjectSecret.secret)
        .join(JobEvent, JobEvent.id == WebhookDelivery.event_id)
        .outerjoin(ProjectSecret, ProjectSecret.project_id == WebhookDelivery.project_id)
        .where(WebhookDelivery.status == DeliveryStatus.PENDING)
        .order_by(WebhookDelivery.id)
        .limit(BATCH)
    )
    return [
        _Send(d.id, d.target, d.url, d.next_attempt_at <= now, event_body(e), s, e.id)
        for d, e, s in session.execute(query)
    ]


def deliver_due(
    factory: sessionmaker[Session],
    settings: Settings,
    now: datetime,
    *,
    client: httpx.Client | None = None,
) -> dict[str, int]:
    """Send due deliveries, oldest first, at most one failure per target per pass."""
    with session_scope(factory) as s:
        todo = _pending(s, now)
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    if not todo:
        return counts
    blocked: set[str] = set()
    budget_end = time.monotonic() + 4 * settings.webhook_timeout_s
    box = secret_box(settings)
    own = client is None
    http = client or httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)
    try:
        for item in todo:
            if item.target in blocked:
                continue
            if not item.due or time.monotonic() > budget_end:
                blocked.add(item.target)  # keeps the order: nothing after it goes first
                continue
            code, error, final = _post(http, item, box, settings.webhook_allow_networks)
            outcome = _record(factory, settings, item.id, code, error, final=final)
            counts[outcome] += 1
            if outcome != "delivered":
                blocked.add(item.target)
    finally:
        if own:
            http.close()
    return counts


def _post(
    http: httpx.Client, item: _Send, box: SecretBox, allow: Sequence[Network]
) -> tuple[int | None, str, bool]:
    """(status code, error, whether the error is final: no retry can change it)."""
    if item.secret is None:
        return None, "the project has no webhook secret", False
    try:
        secret = box.open(item.secret)
    except SecretUnreadable:
        return None, "the project's webhook secret does not open with this host's key", False
    try:
        url, host, server_name = pin_destination(item.url, allow)
    except Unresolvable as exc:  # DNS down, or the name gone for now: retried
        return None, str(exc), False
    except RefusedDestination as exc:
        return None, f"refused: {exc}", True
    stamp = str(int(time.time()))
    headers = {
        "Host": host,
        "Content-Type": "application/json",
        "User-Agent": "hpc-compute-broker-webhooks",
        "X-Broker-Timestamp": stamp,
        "X-Broker-Signature": sign(secret, stamp, item.body),
        "X-Broker-Event-Id": str(item.event_id),
        "X-Broker-Delivery-Id": str(item.id),
    }
    try:
        resp = http.post(
            url, content=item.body, headers=headers, extensions={"sni_hostname": server_name}
        )
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:1000], False
    if 200 <= resp.status_code < 300:
        return resp.status_code, "", False
    return resp.status_code, f"HTTP {resp.status_code}: {resp.text[:200]}", False


def _record(
    factory: sessionmaker[Session],
    settings: Settings,
    delivery_id: int,
    code: int | None,
    error: str,
    *,
    final: bool = False,
) -> str:
    with session_scope(factory) as s:
        d = s.get(WebhookDelivery, delivery_id)
        if d is None:
            return "failed"
        now = datetime.now(UTC)
        d.attempts += 1
        d.last_status_code, d.last_error = code, error[:1000]
        if not error:
            d.status, d.delivered_at = DeliveryStatus.DELIVERED, now
            return "delivered"
        if final or d.attempts >= settings.webhook_max_attempts:
            d.status = DeliveryStatus.FAILED
            return "failed"
        delay = settings.webhook_retry_base_s * 2 ** (d.attempts - 1)
        delay = min(settings.webhook_retry_max_s, delay)
        d.next_attempt_at = now + timedelta(seconds=delay)
        return "retrying"


def events_after(
    session: Session, principal: Principal, job_id: uuid.UUID, after_id: int
) -> tuple[list[JobEvent], bool, dict[str, Any] | None]:
    """The job's events after ``after_id``, whether it is terminal, and its snapshot."""
    job = session.get(Job, job_id)
    if job is None or not principal.can_see(job.enterprise_id):
        raise NotFound("job not found")
    query = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
        .order_by(JobEvent.id)
        .limit(BATCH)
    )
    events = list(session.scalars(query))
    return events, job.state.terminal, job_snapshot(job, session.get(JobIO, job_id))
