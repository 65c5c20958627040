"""PFlop·h arithmetic in exact integers.

The ledger's base unit is one GFLOP (1e9 floating-point operations): one PFlop·h
(1 PFLOP/s for one hour = 3.6e18 FLOP) is 3.6e9 units, so a signed 64-bit column
holds ±2.56e9 PFlop·h. Node rates are integers of MFLOP/s, so the work of a job,
``nodes × rate_mflops × seconds``, is an exact integer of MFLOP; ``work_units`` turns
it into units with an explicit rounding: a hold (an upper bound) rounds up, a charge
line rounds half-even. Amounts are identical on SQLite and PostgreSQL; floats appear
only at the JSON edge.

Limits: one amount (a grant, an adjustment, an allocation) is at most ``MAX_PFH``
(1e9 PFlop·h); an enterprise's running grant total is at most ``CEILING_PFH`` (2e9),
and its held + charged never exceed what it was granted, so no balance column and no
per-enterprise sum can leave a signed 64-bit integer. Sums over many enterprises or
over all of an enterprise's history are taken with ``services.ledger.sum_units``,
which cannot overflow either.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final, Literal

UNITS_PER_PFH: Final = 3_600_000_000  # GFLOP per PFlop·h
MFLOP_PER_UNIT: Final = 1_000  # MFLOP per GFLOP
MFLOP_PER_PFH: Final = UNITS_PER_PFH * MFLOP_PER_UNIT
MFLOPS_PER_TFLOPS: Final = 1_000_000
INT64_MAX: Final = 2**63 - 1

MAX_PFH: Final = Decimal(1_000_000_000)  # one amount (grant, adjustment, allocation)
MAX_UNITS: Final = int(MAX_PFH) * UNITS_PER_PFH
CEILING_PFH: Final = Decimal(2_000_000_000)  # an enterprise's running grant total
CEILING_UNITS: Final = int(CEILING_PFH) * UNITS_PER_PFH
assert CEILING_UNITS < INT64_MAX

#: Roundings of work (MFLOP) to units: a hold is an upper bound, a charge line is fair.
Rounding = Literal["ROUND_CEILING", "ROUND_HALF_EVEN"]
HOLD: Final = "ROUND_CEILING"
CHARGE: Final = "ROUND_HALF_EVEN"
assert (HOLD, CHARGE) == (ROUND_CEILING, ROUND_HALF_EVEN)


def pfh_to_units(amount_pfh: float | int | str | Decimal) -> int:
    """Convert PFlop·h to ledger units, rounding half-even to the nearest GFLOP.

    Raises ``ValueError`` for a value that is not finite or above ``MAX_PFH`` in
    magnitude.
    """
    try:
        value = Decimal(str(amount_pfh))
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {amount_pfh!r}") from exc
    if not value.is_finite():
        raise ValueError("must be finite")
    if abs(value) > MAX_PFH:
        raise ValueError(f"must be at most {MAX_PFH:,} PFlop·h in magnitude")
    return int((value * UNITS_PER_PFH).to_integral_value(rounding=ROUND_HALF_EVEN))


def units_to_pfh(units: int) -> float:
    """Ledger units as PFlop·h for JSON.

    12 decimals (1 unit is 2.8e-10 PFlop·h, so the decimal names its unit), then the
    nearest float: whole PFlop·h amounts (1e9 included) are exact, and below about
    1e6 PFlop·h ``pfh_to_units(units_to_pfh(u)) == u``. Above that a float cannot name
    every GFLOP; the exact integer is the ledger's (e.g. a statement's ``net_units``).
    """
    return float((Decimal(units) / UNITS_PER_PFH).quantize(Decimal("1e-12")))


def tflops_to_mflops(rate_tflops: float | int | str | Decimal) -> int:
    """A node rate in TFLOP/s as integer MFLOP/s."""
    value = Decimal(str(rate_tflops))
    if not value.is_finite() or value < 0:
        raise ValueError("rate must be a non-negative finite number")
    return int((value * MFLOPS_PER_TFLOPS).to_integral_value(rounding=ROUND_HALF_EVEN))


def mflops_to_tflops(rate_mflops: int) -> float:
    return rate_mflops / MFLOPS_PER_TFLOPS


def work_units(rate_mflops: int, elapsed_s: int, nodes: int = 1, *, rounding: Rounding) -> int:
    """Units (GFLOP) for ``nodes`` nodes at ``rate_mflops`` each for ``elapsed_s`` seconds.

    The work is an exact integer of MFLOP; ``rounding`` says how it becomes whole
    GFLOP: ``HOLD`` (up: a hold must cover any charge) or ``CHARGE`` (half-even: one
    charge line; a job's charge is the sum of its lines, capped at its hold).
    """
    whole, rest = divmod(nodes * rate_mflops * elapsed_s, MFLOP_PER_UNIT)
    if rounding == HOLD:
        return whole + (rest > 0)
    if rounding == CHARGE:
        twice = 2 * rest
        return whole + (twice > MFLOP_PER_UNIT or (twice == MFLOP_PER_UNIT and whole % 2 == 1))
    raise ValueError(f"unsupported rounding: {rounding!r}")


def work_pfh(rate_mflops: int, elapsed_s: float, nodes: int = 1) -> float:
    """The same work in PFlop·h as a float, for scores and estimates (never the ledger)."""
    return nodes * rate_mflops * elapsed_s / MFLOP_PER_PFH


def check_amount(amount_pfh: float | int | str | Decimal, *, zero_ok: bool = False) -> Decimal:
    """A PFlop·h amount the ledger can take exactly, else ``ValueError`` saying why.

    Finite, at most ``MAX_PFH`` in magnitude, and (unless ``zero_ok`` and it is 0)
    not so small that it rounds to zero units.
    """
    value = Decimal(str(amount_pfh))
    units = pfh_to_units(value)
    if units == 0 and not (zero_ok and value == 0):
        raise ValueError(
            "rounds to zero: the ledger's unit is 1 GFLOP (2.8e-10 PFlop·h)"
            if value != 0
            else "must not be zero"
        )
    return value
