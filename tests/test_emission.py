"""Pure-core tests: the IO emission schedule, genesis allocation and vesting, and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from idlegrid.cli.main import app
from idlegrid.core import emission
from idlegrid.core.emission import UNITS_PER_IO as U


def test_schedule_sums_to_exactly_300m_io() -> None:
    s = emission.schedule()
    assert len(s) == emission.EPOCHS == 175_319
    assert sum(s) == 300_000_000 * U == emission.EMISSION_TOTAL_UNITS
    assert emission.cumulative(emission.EPOCHS - 1) == emission.EMISSION_TOTAL_UNITS


def test_first_hour_is_4566_21_io() -> None:
    assert emission.hour_amount(0) == 456_621_000_000 == emission.FIRST_HOUR_UNITS
    assert emission.to_io(emission.hour_amount(0)) == Decimal("4566.21")


def test_year_one_is_about_37_66m_io() -> None:
    year_one = emission.cumulative(emission.HOURS_PER_YEAR - 1)
    assert year_one == 3_766_298_035_067_494  # 37,662,980.35067494 IO
    assert abs(year_one - 37_660_000 * U) < 10_000 * U  # within 0.01M of 37.66M
    assert emission.by_period("year")[0][1] == year_one


def test_every_hour_is_less_than_the_one_before() -> None:
    s = np.array(emission.schedule(), dtype=np.int64)
    assert (s > 0).all()
    assert (np.diff(s) < 0).all()


def test_last_epoch_is_the_remainder_and_below_the_hour_before() -> None:
    s = emission.schedule()
    last, previous = s[-1], s[-2]
    assert last == emission.EMISSION_TOTAL_UNITS - sum(s[:-1])
    assert 0 <= last < previous
    # The plain geometric sum overshoots by about 3.55 IO, so the last epoch is trimmed.
    assert last == 39_657_542_325  # 396.57542325 IO
    assert previous == 40_013_546_389  # 400.13546389 IO


def test_the_geometric_sum_overshoots_only_in_the_last_epoch() -> None:
    # Decimal's 28 digits are plenty for the closed form a·(1 − rⁿ)/(1 − r).
    r = Decimal(emission.DECAY.numerator) / Decimal(emission.DECAY.denominator)
    full = emission.FIRST_HOUR * (1 - r**emission.EPOCHS) / (1 - r)
    but_last = emission.FIRST_HOUR * (1 - r ** (emission.EPOCHS - 1)) / (1 - r)
    assert Decimal("3.55") < full - emission.EMISSION_TOTAL < Decimal("3.56")
    assert Decimal("396.57") < emission.EMISSION_TOTAL - but_last < Decimal("396.58")


def test_cumulative_never_exceeds_the_cap_and_rises() -> None:
    c = np.cumsum(np.array(emission.schedule(), dtype=np.int64))
    assert c[-1] == emission.EMISSION_TOTAL_UNITS
    assert (c <= emission.EMISSION_TOTAL_UNITS).all()
    assert emission.cumulative(-1) == 0
    assert emission.cumulative(10**9) == emission.EMISSION_TOTAL_UNITS
    assert emission.cumulative(1) == emission.hour_amount(0) + emission.hour_amount(1)
    assert emission.hour_amount(emission.EPOCHS) == 0
    with pytest.raises(ValueError):
        emission.hour_amount(-1)


def test_hours_are_exactly_rounded() -> None:
    """Spot checks against exact rationals; no exact value is near a rounding boundary."""
    for h in (0, 1, 2, 8_759, 60_000):
        exact = emission.FIRST_HOUR_UNITS * emission.DECAY**h
        assert emission.hour_amount(h) == int(exact + Fraction(1, 2))
    assert emission.nearest_half_distance() > Fraction(1, 10**6)


@pytest.mark.parametrize(
    ("period", "count", "size"), [("hour", 175_319, 1), ("month", 241, 730), ("year", 21, 8_760)]
)
def test_by_period_sums_agree_with_the_total(
    period: emission.Period, count: int, size: int
) -> None:
    rows = emission.by_period(period)
    assert len(rows) == count
    assert [i for i, _, _ in rows] == list(range(count))
    assert sum(a for _, a, _ in rows) == emission.EMISSION_TOTAL_UNITS
    assert rows[-1][2] == emission.EMISSION_TOTAL_UNITS
    for index, _, total in rows:
        assert total == emission.cumulative(min((index + 1) * size, emission.EPOCHS) - 1)


def test_build_schedule_caps_the_cumulative_when_the_sum_overshoots() -> None:
    s = emission.build_schedule(100, Fraction(9, 10), 6, 300)
    assert s == [100, 90, 81, 29, 0, 0]
    nonzero = [x for x in s if x]
    assert all(a > b for a, b in pairwise(nonzero))
    with pytest.raises(emission.ScheduleError) as exc:  # undershoot: the rest would grow
        emission.build_schedule(100, Fraction(1, 2), 3, 1_000)
    assert (exc.value.last, exc.value.previous) == (850, 50)


def test_io_formatting_is_exact() -> None:
    assert emission.to_io(1) == Decimal("0.00000001")
    assert f"{emission.to_io(0):f}" == "0.00000000"
    assert emission.to_io(-150_000_000) == Decimal("-1.5")
    assert emission.format_io(emission.EMISSION_TOTAL_UNITS) == "300,000,000.00000000"
    assert emission.format_io(456_621_000_000) == "4,566.21000000"


def test_genesis_validates_and_supply_adds_up() -> None:
    emission.validate_genesis(emission.GENESIS_ALLOCATION)
    assert sum(a.amount for a in emission.GENESIS_ALLOCATION) == 500_000_000 * U
    assert emission.GENESIS_SUPPLY + emission.EMISSION_TOTAL == emission.MAX_SUPPLY == 800_000_000
    bad = (replace(emission.GENESIS_ALLOCATION[0], amount=1), *emission.GENESIS_ALLOCATION[1:])
    with pytest.raises(emission.GenesisError) as exc:
        emission.validate_genesis(bad)
    assert exc.value.expected == emission.GENESIS_SUPPLY_UNITS
    with pytest.raises(ValueError):
        emission.validate_genesis((*emission.GENESIS_ALLOCATION, emission.GENESIS_ALLOCATION[0]))


def test_vesting_follows_the_tranches() -> None:
    seed, _, core, rnd, community = emission.GENESIS_ALLOCATION
    assert emission.vested(seed, 12) == 0
    assert emission.vested(seed, 13) == seed.amount // 24
    assert emission.vested(seed, 36) == seed.amount
    assert emission.vested(core, 47) < core.amount == emission.vested(core, 48)
    assert emission.vested(rnd, 1) == rnd.amount // 48
    assert emission.vested(community, 0) == community.amount
    assert emission.vested(community, -1) == 0


@given(
    st.sampled_from(emission.GENESIS_ALLOCATION),
    st.integers(-24, 120),
    st.integers(0, 120),
)
def test_vesting_is_monotone_and_bounded(category: emission.Allocation, m: int, step: int) -> None:
    before, after = emission.vested(category, m), emission.vested(category, m + step)
    assert 0 <= before <= after <= category.amount


@given(
    st.integers(1, 10**17),
    st.integers(0, 36),
    st.integers(0, 60),
    st.integers(-12, 120),
    st.integers(0, 60),
)
def test_vesting_is_monotone_for_any_terms(
    amount: int, cliff: int, linear: int, m: int, step: int
) -> None:
    category = emission.Allocation("x", amount, cliff, linear)
    before, after = emission.vested(category, m), emission.vested(category, m + step)
    assert 0 <= before <= after <= amount
    assert emission.vested(category, cliff + linear) == amount


def test_cli_schedule_by_year_json_sums_to_300m() -> None:
    result = CliRunner().invoke(app, ["token", "schedule", "--by", "year", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 21
    assert sum(Decimal(r["amount_io"]) for r in rows) == Decimal(300_000_000)
    assert rows[-1]["cumulative_io"] == "300000000.00000000"
    assert rows[0] == {
        "period": 0,
        "amount_io": "37662980.35067494",
        "cumulative_io": "37662980.35067494",
    }


def test_cli_tables_fit_80_columns() -> None:
    runner = CliRunner()
    for args in (["schedule"], ["schedule", "--by", "hour", "--limit", "3"], ["genesis"]):
        result = runner.invoke(app, ["token", *args])
        assert result.exit_code == 0, result.output
        assert max(len(line) for line in result.output.splitlines()) <= 80
    genesis = json.loads(runner.invoke(app, ["token", "genesis", "--json"]).output)
    assert sum(Decimal(g["amount_io"]) for g in genesis) == Decimal(500_000_000)
