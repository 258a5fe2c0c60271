"""Templates and the filters they format numbers with.

Amounts are shown exactly (the API's decimal strings, with thousands
separators and trailing zeros trimmed to two places), so what a page says can
be compared with the API digit for digit. Times are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from idlegrid.core.emission import to_io
from idlegrid.version import __version__

REFRESH_S = 15
"""Pages reload themselves this often (a meta refresh: no script needed)."""

NAV = (
    ("home", "/explorer", "Home"),
    ("devices", "/explorer/devices", "Workers"),
    ("clusters", "/explorer/clusters", "Clusters"),
    ("blocks", "/explorer/blocks", "Block rewards"),
    ("staking", "/explorer/staking", "Staking"),
    ("token", "/explorer/token", "Token"),
    ("map", "/explorer/map", "Network map"),
)


def amount(value: str | Decimal | int | None, places: int | None = None) -> str:
    """An exact decimal with thousands separators: ``"1234.50000000"`` → ``1,234.50``
    (trailing zeros trimmed to two places), or with exactly ``places`` places, which
    lines a table's column up (never rounding: a figure with more places keeps them)."""
    if value is None:
        return "—"
    whole, _, frac = f"{Decimal(value):,f}".partition(".")
    frac = frac.rstrip("0")
    frac = frac.ljust(places if places is not None else 2, "0")
    return f"{whole}.{frac}"


def io_units(units: int, places: int | None = None) -> str:
    """IO smallest units (10⁻⁸) shown as :func:`amount`."""
    return amount(to_io(units), places)


def when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short(identifier: str | None, keep: int = 6) -> str:
    """``4Nd1m…9xQz``: enough of an id to tell it apart; the full id is in ``title``."""
    if not identifier:
        return "—"
    if len(identifier) <= 2 * keep + 1:
        return identifier
    return f"{identifier[:keep]}…{identifier[-4:]}"


def hours(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 3600:,.2f}"


def number(value: float | int | None, places: int = 0) -> str:
    return "—" if value is None else f"{value:,.{places}f}"


_env = Environment(
    loader=PackageLoader("idlegrid.explorer", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(
    amount=amount, io_units=io_units, when=when, short=short, hours=hours, number=number
)
_env.globals.update(nav=NAV, version=__version__, refresh_s=REFRESH_S)


def page(
    request: Request, template: str, active: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render one page; ``active`` names its item in the navigation."""
    html = _env.get_template(template).render(request=request, active=active, **context)
    return HTMLResponse(html, status_code=status_code)
