"""Connectivity tiers from a speed test. Pure.

io.net's four tiers, by download / upload speed (the figures DESIGN.md gives,
read here as megabits per second, the unit speed tests report)::

    4 ultra high  ≥ 1600 / 1200
    3 high        ≥  800 / 600
    2 medium      ≥  400 / 300
    1 low         ≥  100 / 10
    0 none        below low: not eligible for rewards
"""

from __future__ import annotations

TIERS: tuple[tuple[int, str, float, float], ...] = (
    (4, "ultra_high", 1600.0, 1200.0),
    (3, "high", 800.0, 600.0),
    (2, "medium", 400.0, 300.0),
    (1, "low", 100.0, 10.0),
)


def tier(download_mbps: float, upload_mbps: float) -> int:
    """The highest tier whose download and upload floors are both met."""
    for number, _name, down, up in TIERS:
        if download_mbps >= down and upload_mbps >= up:
            return number
    return 0


def tier_name(number: int) -> str:
    return next((name for n, name, _d, _u in TIERS if n == number), "none")


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes * 8 / max(seconds, 1e-9) / 1e6
