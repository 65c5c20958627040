"""brokerctl quota: budgets in PFlop·h (grants, adjustments, project allocations, balances)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..api import views
from ..services import ledger, projects
from . import _common as c

quota_app = typer.Typer(
    help="Budgets in PFlop·h: grants, adjustments, allocations.", no_args_is_help=True
)

EntArg = Annotated[str, typer.Argument(help="Enterprise id, name or Slurm account.")]
ProjArg = Annotated[str, typer.Argument(help="Project id (or a name unique in the center).")]


# -- quota ---------------------------------------------------------------------------
PfhOpt = Annotated[str, typer.Option("--pfh", help="Amount in PFlop·h.")]


def _entry_out(entry_data: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        c.print_json(entry_data)
    else:
        c.say(f"{verb} {entry_data['amount_pfh']:g} PFlop·h (entry {entry_data['id']})")


@quota_app.command("grant")
def quota_grant(
    enterprise: EntArg,
    pfh: PfhOpt,
    memo: Annotated[str, typer.Option(help="Why, kept in the ledger entry.")] = "",
    as_json: c.JsonOpt = False,
) -> None:
    """Grant budget to an enterprise for its current period."""
    with c.unit_of_work() as s:
        ent = c.enterprise_ref(s, enterprise)
        data = c.dump(views.entry(ledger.grant(s, c.ADMIN, ent.id, c.units(pfh), memo)))
    _entry_out(data, as_json, "granted")


@quota_app.command("adjust")
def quota_adjust(
    enterprise: EntArg,
    pfh: Annotated[str, typer.Option("--pfh", help="Signed amount in PFlop·h, e.g. --pfh -5.")],
    memo: Annotated[str, typer.Option(help="Why (required).")],
    as_json: c.JsonOpt = False,
) -> None:
    """Correct an enterprise's budget up or down (never below what is in use)."""
    with c.unit_of_work() as s:
        ent = c.enterprise_ref(s, enterprise)
        data = c.dump(views.entry(ledger.adjust(s, c.ADMIN, ent.id, c.units(pfh), memo)))
    _entry_out(data, as_json, "adjusted by")


@quota_app.command("allocate")
def quota_allocate(
    project: ProjArg,
    pfh: Annotated[str | None, typer.Option("--pfh", help="The project's allocation.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the project's limit.")] = False,
    as_json: c.JsonOpt = False,
) -> None:
    """Set a project's sub-allocation of its enterprise's budget (or --clear it)."""
    if (pfh is None) == (not clear):
        c.fail("give exactly one of --pfh or --clear", c.USAGE_ERROR)
    amount = None if pfh is None else c.units(pfh)
    with c.unit_of_work() as s:
        p = ledger.allocate(s, c.ADMIN, c.project_ref(s, project), amount)
        data = c.dump(views.project_balance(p, ledger.project_balance(s, p)))
    if as_json:
        c.print_json(data)
    elif data["allocation_pfh"] is None:
        c.say(f"project {data['project_id']} has no allocation limit")
    else:
        shown = f"{data['allocation_pfh']:g}"
        c.say(f"project {data['project_id']} allocated {shown} PFlop·h")


@quota_app.command("show")
def quota_show(
    enterprise: EntArg,
    entries: Annotated[int, typer.Option(min=0, help="How many recent ledger entries.")] = 10,
    as_json: c.JsonOpt = False,
) -> None:
    """An enterprise's balance, its projects' allocations and its recent ledger entries."""
    with c.unit_of_work() as s:
        ent = c.enterprise_ref(s, enterprise)
        data: dict[str, Any] = {
            "enterprise": ent.name,
            "period": ent.current_period,
            **c.dump(views.balance(ent.id, ledger.balance(s, c.ADMIN, ent.id))),
            "projects": [
                {"name": p.name, **c.dump(views.project_balance(p, ledger.project_balance(s, p)))}
                for p in projects.list_projects(s, c.ADMIN, enterprise_id=ent.id)
            ],
            "entries": [
                c.dump(views.entry(e))
                for e in ledger.list_entries(s, c.ADMIN, ent.id, limit=entries)
            ]
            if entries
            else [],
        }
    if as_json:
        c.print_json(data)
        return
    c.fields(
        f"quota of {data['enterprise']} ({data['period']})",
        {k: f"{v:g}" for k, v in data.items() if k.endswith("_pfh")},
    )
    _pfh = _fmt_pfh
    c.table(
        "projects",
        ["name", "allocation", "held", "charged", "remaining"],
        [
            (
                p["name"],
                _pfh(p["allocation_pfh"]),
                _pfh(p["held_pfh"]),
                _pfh(p["charged_pfh"]),
                _pfh(p["remaining_pfh"]),
            )
            for p in data["projects"]
        ],
    )
    c.table(
        "recent entries",
        ["id", "kind", "PFlop·h", "job", "memo", "actor", "at"],
        [
            (
                e["id"],
                e["kind"],
                f"{e['amount_pfh']:g}",
                e["job_id"] or "",
                e["memo"],
                e["actor"],
                e["created_at"],
            )
            for e in data["entries"]
        ],
    )


def _fmt_pfh(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
