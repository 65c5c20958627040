"""PFlop·h arithmetic is exact in integers of 1 GFLOP."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import units


def test_one_pfh_is_3_6e9_gflop() -> None:
    assert units.UNITS_PER_PFH == 3_600_000_000
    assert units.pfh_to_units(1) == 3_600_000_000
    assert units.units_to_pfh(3_600_000_000) == 1.0
    assert units.pfh_to_units("0.1") == 360_000_000
    assert units.pfh_to_units("0.000000000277777777778") == 1  # one GFLOP


def test_limits_fit_a_signed_64_bit_integer() -> None:
    assert (units.MAX_PFH, units.CEILING_PFH) == (10**9, 2 * 10**9)
    assert units.pfh_to_units(units.MAX_PFH) == units.MAX_UNITS == 3_600_000_000 * 10**9
    assert units.pfh_to_units(-units.MAX_PFH) == -units.MAX_UNITS
    assert units.CEILING_UNITS == 2 * units.MAX_UNITS < units.INT64_MAX == 2**63 - 1
    # The largest amount, as JSON's float, reads back exactly.
    assert units.units_to_pfh(units.MAX_UNITS) == 1e9
    assert units.pfh_to_units(1e9) == units.MAX_UNITS
    assert units.units_to_pfh(units.CEILING_UNITS) == 2e9


@pytest.mark.parametrize(
    "bad", ["nan", "inf", "-inf", "abc", 1e300, 1e9 + 1, 1e12, "-1000000000.1"]
)
def test_rejects_non_finite_and_above_the_limit(bad: object) -> None:
    with pytest.raises(ValueError):
        units.pfh_to_units(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("tiny", [1e-15, 5e-324, -1e-12, "1.3e-10"])
def test_an_amount_that_rounds_to_zero_units_is_refused(tiny: object) -> None:
    assert units.pfh_to_units(tiny) == 0  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rounds to zero"):
        units.check_amount(tiny)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rounds to zero"):
        units.check_amount(tiny, zero_ok=True)  # type: ignore[arg-type]


def test_check_amount() -> None:
    assert units.check_amount("1.4e-10") == Decimal("1.4e-10")  # rounds to 1 unit
    assert units.check_amount(0, zero_ok=True) == 0
    with pytest.raises(ValueError, match="zero"):
        units.check_amount(0)
    with pytest.raises(ValueError, match="at most"):
        units.check_amount(1e12)


def test_charge_of_a_node_hour() -> None:
    # One node at 1 TFLOP/s for one hour is 1/1000 PFlop·h, with either rounding.
    rate = units.tflops_to_mflops(1)
    for rounding in (units.HOLD, units.CHARGE):
        assert units.work_units(rate, 3600, rounding=rounding) == units.pfh_to_units("0.001")
    assert units.work_pfh(rate, 3600) == 0.001


@pytest.mark.parametrize(
    ("mflop", "hold", "charge"),
    [
        (0, 0, 0),
        (1, 1, 0),
        (499, 1, 0),
        (500, 1, 0),  # half: to even (0)
        (501, 1, 1),
        (1_000, 1, 1),
        (1_500, 2, 2),  # half: to even (2)
        (2_500, 3, 2),  # half: to even (2)
        (2_501, 3, 3),
        (3_500, 4, 4),
    ],
)
def test_work_rounding(mflop: int, hold: int, charge: int) -> None:
    assert units.work_units(mflop, 1, rounding=units.HOLD) == hold
    assert units.work_units(mflop, 1, rounding=units.CHARGE) == charge


def test_work_units_needs_a_known_rounding() -> None:
    with pytest.raises(ValueError):
        units.work_units(1, 1, rounding="ROUND_DOWN")  # type: ignore[arg-type]


@given(
    st.integers(0, 10**12),  # MFLOP/s: up to 1 EFLOP/s per node
    st.integers(0, 60 * 24 * 31 * 60),
    st.integers(1, 100_000),
)
def test_work_is_the_exact_mflop_rounded_as_asked(rate: int, seconds: int, nodes: int) -> None:
    exact = Fraction(nodes * rate * seconds, units.MFLOP_PER_UNIT)
    hold = units.work_units(rate, seconds, nodes, rounding=units.HOLD)
    charge = units.work_units(rate, seconds, nodes, rounding=units.CHARGE)
    assert hold - 1 < exact <= hold
    assert abs(charge - exact) <= Fraction(1, 2)
    assert charge <= hold
    assert charge == round(exact)  # Python's round() is half-even


@given(st.decimals(min_value=Decimal(-(10**6)), max_value=Decimal(10**6), places=8))
def test_round_trip_is_exact_to_1e_8_pfh(value: Decimal) -> None:
    # 1e-8 PFlop·h is 36 units: a value with 8 decimals is whole units, and comes back.
    assert Decimal(str(units.units_to_pfh(units.pfh_to_units(value)))) == value


@given(st.integers(-units.pfh_to_units(10**6), units.pfh_to_units(10**6)))
def test_units_round_trip_through_json_floats_up_to_a_million_pfh(u: int) -> None:
    assert units.pfh_to_units(units.units_to_pfh(u)) == u


@given(st.integers(-(10**9), 10**9))
def test_whole_pfh_are_exact_up_to_the_limit(n: int) -> None:
    assert units.pfh_to_units(float(n)) == n * units.UNITS_PER_PFH
    assert units.units_to_pfh(n * units.UNITS_PER_PFH) == float(n)
