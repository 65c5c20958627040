"""PFlop·h arithmetic in exact integers.

The ledger's base unit is one MFLOP (1e6 floating-point operations): one PFlop·h
(1 PFLOP/s for one hour = 3.6e18 FLOP) is 3.6e12 units. Node rates are integers of
MFLOP/s, so a charge ``Σ rate_mflops × elapsed_s`` is an exact integer, identical on
SQLite and PostgreSQL. Floats appear only at the JSON edge.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

UNITS_PER_PFH = 3_600_000_000_000  # MFLOP per PFlop·h
MFLOPS_PER_TFLOPS = 1_000_000
MAX_PFH = Decimal(2_000_000)  # keeps every sum far inside a signed 64-bit integer


def pfh_to_units(amount_pfh: float | int | str | Decimal) -> int:
    """Convert PFlop·h to ledger units, rounding half-even to the nearest MFLOP."""
    try:
        value = Decimal(str(amount_pfh))
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {amount_pfh!r}") from exc
    if not value.is_finite():
        raise ValueError("must be finite")
    if abs(value) > MAX_PFH:
        raise ValueError(f"must be at most {MAX_PFH} PFlop·h in magnitude")
    return int((value * UNITS_PER_PFH).to_integral_value(rounding=ROUND_HALF_EVEN))


def units_to_pfh(units: int) -> float:
    """Ledger units as PFlop·h for JSON (12 decimals, ~0.0036 MFLOP resolution)."""
    return float((Decimal(units) / UNITS_PER_PFH).quantize(Decimal("1e-12")))


def tflops_to_mflops(rate_tflops: float | int | str | Decimal) -> int:
    """A node rate in TFLOP/s as integer MFLOP/s."""
    value = Decimal(str(rate_tflops))
    if not value.is_finite() or value < 0:
        raise ValueError("rate must be a non-negative finite number")
    return int((value * MFLOPS_PER_TFLOPS).to_integral_value(rounding=ROUND_HALF_EVEN))


def mflops_to_tflops(rate_mflops: int) -> float:
    return rate_mflops / MFLOPS_PER_TFLOPS


def work_units(rate_mflops: int, elapsed_s: int, nodes: int = 1) -> int:
    """Units for ``nodes`` nodes at ``rate_mflops`` each for ``elapsed_s`` seconds."""
    return nodes * rate_mflops * elapsed_s
