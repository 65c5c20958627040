"""brokerctl enterprise | token | project: tenants, their tokens and their projects."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from sqlalchemy.orm import Session

from ..api import views
from ..models import Enterprise, EnterpriseStatus, PeriodKind, ProjectStatus, Role
from ..services import ledger, projects, slurm_sync, tenants, tokens, workspaces
from . import _common as c

enterprise_app = typer.Typer(help="Enterprises (the center's tenants).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
project_app = typer.Typer(help="PoC projects.", no_args_is_help=True)

EntArg = Annotated[str, typer.Argument(help="Enterprise id, name or Slurm account.")]
ProjArg = Annotated[str, typer.Argument(help="Project id (or a name unique in the center).")]


# -- enterprise ----------------------------------------------------------------------
def _enterprise_data(session: Session, ent: Enterprise) -> dict[str, Any]:
    data = c.dump(views.enterprise(ent))
    data["balance"] = c.dump(views.balance(ent.id, ledger.balance(session, c.ADMIN, ent.id)))
    return dict(data)


def _enterprise_rows(items: list[dict[str, Any]]) -> None:
    c.table(
        "enterprises",
        ["id", "name", "status", "account", "posix user", "period", "available PFlop·h"],
        [
            (
                e["id"],
                e["name"],
                e["status"],
                e["slurm_account"],
                e["posix_user"],
                e["period"],
                f"{e['balance']['available_pfh']:g}",
            )
            for e in items
        ],
    )


def _cap_mflops(cap_pflops: str | None) -> int | None:
    if cap_pflops is None:
        return None
    try:
        value = Decimal(cap_pflops)
    except InvalidOperation:
        c.fail(f"--capacity-cap-pflops: not a number: {cap_pflops!r}", c.USAGE_ERROR)
    if not value.is_finite() or value <= 0:
        c.fail("--capacity-cap-pflops: must be greater than zero", c.USAGE_ERROR)
    return int(value * 10**9)


@enterprise_app.command("create")
def enterprise_create(
    name: Annotated[str, typer.Argument(help="The enterprise's name.")],
    posix_user: Annotated[str | None, typer.Option(help="POSIX user its jobs run as.")] = None,
    slurm_account: Annotated[str | None, typer.Option(help="Its Slurm account.")] = None,
    capacity_cap_pflops: Annotated[
        str | None, typer.Option(help="PFLOP/s it may hold at once.")
    ] = None,
    period: Annotated[PeriodKind, typer.Option(help="Budget period.")] = PeriodKind.MONTH,
    carry_over: Annotated[
        bool, typer.Option("--carry-over/--no-carry-over", help="Unused budget carries over.")
    ] = True,
    as_json: c.JsonOpt = False,
) -> None:
    """Create an enterprise (its Slurm account and POSIX user default from its name)."""
    with c.unit_of_work() as s:
        ent = tenants.create_enterprise(
            s,
            c.ADMIN,
            name=name,
            posix_user=posix_user,
            slurm_account=slurm_account,
            capacity_cap_mflops=_cap_mflops(capacity_cap_pflops),
            period=period,
            carry_over=carry_over,
            rules=tenants.IdentityRules.of(c.settings()),
        )
        data = _enterprise_data(s, ent)
    if as_json:
        c.print_json(data)
    else:
        c.say(f"created enterprise {data['name']} ({data['id']})")


@enterprise_app.command("list")
def enterprise_list(as_json: c.JsonOpt = False) -> None:
    """List enterprises with their available budget."""
    with c.unit_of_work() as s:
        items = [_enterprise_data(s, e) for e in tenants.list_enterprises(s, c.ADMIN)]
    if as_json:
        c.print_json(items)
    else:
        _enterprise_rows(items)


@enterprise_app.command("show")
def enterprise_show(ref: EntArg, as_json: c.JsonOpt = False) -> None:
    """One enterprise: settings, balance and projects."""
    with c.unit_of_work() as s:
        ent = c.enterprise_ref(s, ref)
        data = _enterprise_data(s, ent)
        data["projects"] = [
            c.dump(views.project(p))
            for p in projects.list_projects(s, c.ADMIN, enterprise_id=ent.id)
        ]
    if as_json:
        c.print_json(data)
        return
    flat = {k: v for k, v in data.items() if k not in ("balance", "projects")}
    flat.update({k: f"{v:g}" for k, v in data["balance"].items() if k.endswith("_pfh")})
    c.fields(f"enterprise {data['name']}", flat)
    _project_rows(data["projects"])


def _set_status(ref: str, status: EnterpriseStatus, as_json: bool) -> None:
    with c.unit_of_work() as s:
        ent = tenants.set_status(s, c.ADMIN, c.enterprise_ref(s, ref).id, status)
        # Blocked or unblocked in Slurm at once (a direct sbatch is refused while suspended).
        slurm_sync.push_enterprise(s, c.load_clusters(), ent.id)
        data = _enterprise_data(s, ent)
    if as_json:
        c.print_json(data)
    else:
        c.say(f"enterprise {data['name']} is {data['status']}")


@enterprise_app.command("suspend")
def enterprise_suspend(ref: EntArg, as_json: c.JsonOpt = False) -> None:
    """Suspend an enterprise: it can submit no new jobs (running ones finish)."""
    _set_status(ref, EnterpriseStatus.SUSPENDED, as_json)


@enterprise_app.command("activate")
def enterprise_activate(ref: EntArg, as_json: c.JsonOpt = False) -> None:
    """Lift a suspension."""
    _set_status(ref, EnterpriseStatus.ACTIVE, as_json)


# -- token ---------------------------------------------------------------------------
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _expiry(expires_in: str | None, expires_at: str | None) -> datetime | None:
    if expires_in is not None and expires_at is not None:
        c.fail("give at most one of --expires-in and --expires-at", c.USAGE_ERROR)
    if expires_in is not None:
        match = _DURATION.match(expires_in.strip())
        if match is None or int(match[1]) == 0:
            c.fail(
                f"--expires-in: not a duration like 90d, 12h, 30m: {expires_in!r}", c.USAGE_ERROR
            )
        try:
            return datetime.now(UTC) + timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
        except OverflowError:
            c.fail(f"--expires-in: too far away: {expires_in!r}", c.USAGE_ERROR)
    if expires_at is not None:
        try:
            when = datetime.fromisoformat(expires_at)
        except ValueError:
            c.fail(f"--expires-at: not an ISO 8601 time: {expires_at!r}", c.USAGE_ERROR)
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="A name for the token's holder.")],
    operator: Annotated[bool, typer.Option("--operator", help="A center operator token.")] = False,
    cluster_admin: Annotated[
        bool,
        typer.Option(
            "--cluster-admin", help="A cluster admin token (clusters, nodes, validation)."
        ),
    ] = False,
    enterprise: Annotated[
        str | None, typer.Option(help="An enterprise token: its id, name or account.")
    ] = None,
    role: Annotated[str, typer.Option(help="Enterprise token role: member or admin.")] = "member",
    expires_in: Annotated[
        str | None, typer.Option(help="It stops working after this long: 90d, 12h, 30m, 2w.")
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option(help="It stops working at this ISO 8601 time (UTC if no offset).")
    ] = None,
    as_json: c.JsonOpt = False,
) -> None:
    """Create a token and print it (shown once: store it now)."""
    if operator + cluster_admin + (enterprise is not None) != 1:
        c.fail("give exactly one of --operator, --cluster-admin or --enterprise", c.USAGE_ERROR)
    if enterprise is not None and role not in ("member", "admin"):
        c.fail("--role must be 'member' or 'admin'", c.USAGE_ERROR)
    expiry = _expiry(expires_in, expires_at)
    with c.unit_of_work() as s:
        ent_id = None if enterprise is None else c.enterprise_ref(s, enterprise).id
        kind = Role(role) if ent_id else Role.OPERATOR if operator else Role.CLUSTER_ADMIN
        row, clear = tokens.create_token(
            s, c.ADMIN, name=name, role=kind, enterprise_id=ent_id, expires_at=expiry
        )
        data = {**c.dump(views.token(row)), "token": clear}
    if as_json:
        c.print_json(data)
    else:
        typer.echo(clear)  # alone on stdout: OP=$(brokerctl token create ...)


@token_app.command("list")
def token_list(
    enterprise: Annotated[
        str | None, typer.Option(help="An enterprise's tokens (default: staff tokens).")
    ] = None,
    as_json: c.JsonOpt = False,
) -> None:
    """List tokens (never their secrets)."""
    with c.unit_of_work() as s:
        ent_id = None if enterprise is None else c.enterprise_ref(s, enterprise).id
        items = [c.dump(views.token(t)) for t in tokens.list_tokens(s, c.ADMIN, ent_id)]
    if as_json:
        c.print_json(items)
        return
    c.table(
        "tokens",
        ["id", "name", "role", "prefix", "created", "expires", "revoked"],
        [
            (
                t["id"],
                t["name"],
                t["role"],
                t["prefix"],
                t["created_at"],
                t["expires_at"] or "never",
                t["revoked_at"] or "",
            )
            for t in items
        ],
    )


def _token_id(session: Session, ref: str) -> uuid.UUID:
    """A token by id, or a unique prefix of one (as `token list` shows it)."""
    try:
        return uuid.UUID(ref)
    except ValueError:
        pass
    every = [
        t
        for e in [None, *tenants.list_enterprises(session, c.ADMIN)]
        for t in tokens.list_tokens(session, c.ADMIN, None if e is None else e.id)
    ]
    found = c._by_prefix(ref, every, "token")
    if found is None:
        c.fail(f"TOKEN_ID must be a token id or a unique prefix of one, got {ref!r}", c.USAGE_ERROR)
    return uuid.UUID(str(found.id))


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (see `token list`).")],
    as_json: c.JsonOpt = False,
) -> None:
    """Revoke a token; requests with it fail from now on."""
    with c.unit_of_work() as s:
        row = tokens.revoke_token(s, c.ADMIN, _token_id(s, token_id))
        data = c.dump(views.token(row))
    if as_json:
        c.print_json(data)
    else:
        c.say(f"token {data['name']} ({data['id']}) revoked at {data['revoked_at']}")


# -- project -------------------------------------------------------------------------
def _project_rows(items: list[dict[str, Any]]) -> None:
    c.table(
        "projects",
        ["id", "name", "enterprise", "status", "allocation PFlop·h", "workspace"],
        [
            (
                p["id"],
                p["name"],
                p["enterprise_id"],
                p["status"],
                "" if p["allocation_pfh"] is None else f"{p['allocation_pfh']:g}",
                f"{p.get('workspace_files', 0)} files, {p.get('workspace_bytes', 0)} B"
                if "workspace_files" in p
                else "",
            )
            for p in items
        ],
    )


@project_app.command("create")
def project_create(
    enterprise: EntArg,
    name: Annotated[str, typer.Argument(help="The project's name.")],
    description: Annotated[str, typer.Option(help="What the PoC is about.")] = "",
    allocation_pfh: Annotated[
        str | None, typer.Option(help="Sub-allocation of the enterprise budget.")
    ] = None,
    approve: Annotated[bool, typer.Option("--approve", help="Approve it at once.")] = False,
    as_json: c.JsonOpt = False,
) -> None:
    """Create a project (a draft, unless --approve)."""
    alloc = None if allocation_pfh is None else c.units(allocation_pfh, "--allocation-pfh")
    with c.unit_of_work() as s:
        ent = c.enterprise_ref(s, enterprise)
        p = projects.create_project(
            s,
            c.ADMIN,
            enterprise_id=ent.id,
            name=name,
            description=description,
            allocation_units=alloc,
        )
        if approve:
            p = projects.approve_project(s, c.ADMIN, p.id)
            slurm_sync.push_enterprise(s, c.load_clusters(), ent.id)
        data = c.dump(views.project(p))
    if as_json:
        c.print_json(data)
    else:
        c.say(f"created project {data['name']} ({data['id']}), {data['status']}")


def _project_action(ref: str, action: str, as_json: bool) -> None:
    with c.unit_of_work() as s:
        p = c.project_ref(s, ref)
        if action == "approve":
            p = projects.approve_project(s, c.ADMIN, p.id)
        else:
            p = projects.close_project(s, c.ADMIN, p.id)
        slurm_sync.push_enterprise(s, c.load_clusters(), p.enterprise_id)  # accounts, blocks
        data = c.dump(views.project(p))
    if as_json:
        c.print_json(data)
    else:
        c.say(f"project {data['name']} is {data['status']}")


@project_app.command("approve")
def project_approve(ref: ProjArg, as_json: c.JsonOpt = False) -> None:
    """Approve a draft project: it becomes active and accepts jobs."""
    _project_action(ref, "approve", as_json)


@project_app.command("close")
def project_close(ref: ProjArg, as_json: c.JsonOpt = False) -> None:
    """Close a project: it accepts no more jobs."""
    _project_action(ref, "close", as_json)


@project_app.command("list")
def project_list(
    enterprise: Annotated[str | None, typer.Option(help="Only this enterprise's.")] = None,
    status: Annotated[ProjectStatus | None, typer.Option(help="Only in this status.")] = None,
    as_json: c.JsonOpt = False,
) -> None:
    """List projects."""
    with c.unit_of_work() as s:
        ent_id = None if enterprise is None else c.enterprise_ref(s, enterprise).id
        rows = projects.list_projects(s, c.ADMIN, enterprise_id=ent_id, status=status)
        used = workspaces.usage(s, [p.id for p in rows])
        items = [
            {
                **c.dump(views.project(p)),
                "workspace_files": used.get(p.id, (0, 0))[0],
                "workspace_bytes": used.get(p.id, (0, 0))[1],
            }
            for p in rows
        ]
    if as_json:
        c.print_json(items)
    else:
        _project_rows(items)
