"""PFlop·h arithmetic is exact in integers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import units


def test_one_pfh_is_3_6e12_mflop() -> None:
    assert units.pfh_to_units(1) == 3_600_000_000_000
    assert units.units_to_pfh(3_600_000_000_000) == 1.0
    assert units.pfh_to_units("0.1") == 360_000_000_000


def test_charge_of_a_node_hour() -> None:
    # One node at 1 TFLOP/s for one hour is 1/1000 PFlop·h.
    assert units.work_units(units.tflops_to_mflops(1), 3600) == units.pfh_to_units("0.001")


@pytest.mark.parametrize("bad", ["nan", "inf", "abc", 1e300])
def test_rejects_non_finite_and_huge(bad: object) -> None:
    with pytest.raises(ValueError):
        units.pfh_to_units(bad)  # type: ignore[arg-type]


@given(st.decimals(min_value=Decimal(-1000), max_value=Decimal(1000), places=6))
def test_round_trip_is_exact_to_a_microPFh(value: Decimal) -> None:
    assert Decimal(str(units.units_to_pfh(units.pfh_to_units(value)))) == value
