"""``idlegrid token``: the IO emission schedule and the genesis allocation."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from idlegrid.cli.common import JsonOpt, console, plain_table, print_json
from idlegrid.core import emission
from idlegrid.core.emission import Period

app = typer.Typer(help="The IO token.", no_args_is_help=True)

DEFAULT_HOUR_ROWS = 24


class By(StrEnum):
    HOUR = "hour"
    MONTH = "month"
    YEAR = "year"


PERIODS: dict[By, Period] = {By.HOUR: "hour", By.MONTH: "month", By.YEAR: "year"}


def io_string(units: int) -> str:
    """Exact IO as a plain decimal string for JSON (``"4566.21000000"``)."""
    return f"{emission.to_io(units):f}"


def whole_io(units: int) -> str:
    """IO with thousands separators and no trailing zeros (``128,000,000``)."""
    text = emission.format_io(units).rstrip("0").rstrip(".")
    return text or "0"


def _hours(period: Period, index: int) -> str:
    size = emission.PERIOD_HOURS[period]
    first = index * size
    last = min(first + size, emission.EPOCHS) - 1
    return f"{first:,}" if first == last else f"{first:,}–{last:,}"


def schedule_table(period: Period, rows: list[tuple[int, int, int]]) -> Table:
    """Period, its hours, amount and running total; fits 80 columns."""
    columns = (period, "hours", "IO", "cumulative IO", "of 300M")
    table = plain_table(*columns, right=columns)
    for index, amount, total in rows:
        table.add_row(
            str(index),
            _hours(period, index),
            emission.format_io(amount),
            emission.format_io(total),
            f"{100 * total / emission.EMISSION_TOTAL_UNITS:.3f}%",
        )
    return table


@app.command("schedule")
def show_schedule(
    by: Annotated[By, typer.Option(help="a month is 730 hours, a year 8,760")] = By.YEAR,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help=f"rows to show [default: all; {DEFAULT_HOUR_ROWS} by hour]"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The hourly emission schedule, summed by hour, month or year (periods from 0)."""
    period = PERIODS[by]
    rows = emission.by_period(period)
    if limit is None and period == "hour":
        limit = DEFAULT_HOUR_ROWS
    shown = rows[:limit] if limit is not None else rows
    if as_json:
        print_json(
            [
                {"period": i, "amount_io": io_string(a), "cumulative_io": io_string(c)}
                for i, a, c in shown
            ]
        )
        return
    console.print(schedule_table(period, shown))
    console.print(
        f"{len(shown):,} of {len(rows):,} {period}s; "
        f"{whole_io(emission.EMISSION_TOTAL_UNITS)} IO over {emission.EPOCHS:,} hours"
    )


def _unlocks(a: emission.Allocation) -> str:
    if a.linear_months == 0:
        return "at genesis" if a.cliff_months == 0 else f"month {a.cliff_months}"
    return f"months {a.cliff_months + 1}–{a.cliff_months + a.linear_months}"


@app.command("genesis")
def show_genesis(as_json: JsonOpt = False) -> None:
    """The genesis allocation (500M IO) by category, with vesting."""
    table_ = emission.GENESIS_ALLOCATION
    emission.validate_genesis(table_)
    if as_json:
        out: list[dict[str, Any]] = [
            {
                "category": a.name,
                "amount_io": io_string(a.amount),
                "cliff_months": a.cliff_months,
                "linear_months": a.linear_months,
                "note": a.note,
            }
            for a in table_
        ]
        print_json(out)
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("category", no_wrap=True)
    table.add_column("IO", justify="right", no_wrap=True)
    table.add_column("of 500M", justify="right", no_wrap=True)
    table.add_column("cliff", justify="right", no_wrap=True)
    table.add_column("unlocks", no_wrap=True)
    table.add_column("note")
    for a in table_:
        table.add_row(
            a.name,
            whole_io(a.amount),
            f"{100 * a.amount / emission.GENESIS_SUPPLY_UNITS:.2f}%",
            f"{a.cliff_months} mo",
            _unlocks(a),
            a.note,
        )
    console.print(table)
    console.print(
        f"genesis {emission.GENESIS_SUPPLY:,} + emission {emission.EMISSION_TOTAL:,} "
        f"= max supply {emission.MAX_SUPPLY:,} IO"
    )
