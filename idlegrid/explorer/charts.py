"""Charts as inline SVG, drawn on the server: no script, nothing to download.

Every chart scales with its container (a ``viewBox`` and ``width: 100%``), so
it fits a phone as well as a desktop. Each bar carries its value in
``data-value`` and a ``<title>`` (a tooltip), so a test or a screen reader can
read the figures back.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

# Approximate centres (longitude, latitude) for the dot map; other codes are
# listed under the map instead of placed on it.
CENTROIDS: dict[str, tuple[float, float]] = {
    "US": (-98, 39), "CA": (-106, 56), "MX": (-102, 23), "BR": (-52, -10), "AR": (-64, -34),
    "CL": (-71, -33), "CO": (-74, 4), "PE": (-75, -9), "GB": (-2, 54), "IE": (-8, 53),
    "FR": (2, 46), "DE": (10, 51), "NL": (5, 52), "BE": (4, 50), "CH": (8, 47),
    "AT": (14, 47), "IT": (12, 43), "ES": (-4, 40), "PT": (-8, 39), "SE": (15, 62),
    "NO": (9, 61), "FI": (26, 64), "DK": (10, 56), "PL": (19, 52), "CZ": (15, 50),
    "RO": (25, 46), "UA": (31, 49), "TR": (35, 39), "RU": (90, 60), "IL": (35, 31),
    "AE": (54, 24), "SA": (45, 24), "EG": (30, 27), "NG": (8, 9), "KE": (38, 0),
    "ZA": (24, -29), "IN": (79, 22), "PK": (70, 30), "CN": (104, 35), "HK": (114, 22),
    "TW": (121, 24), "KR": (128, 36), "JP": (138, 36), "SG": (104, 1), "MY": (102, 4),
    "TH": (101, 15), "VN": (106, 16), "ID": (118, -2), "PH": (122, 12), "AU": (134, -25),
    "NZ": (172, -41),
}  # fmt: skip


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.2f}"


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    testid: str,
    unit: str = "",
    height: int = 180,
    highlight: int | None = None,
    label_every: int = 1,
) -> Markup:
    """Vertical bars, one per (label, value); ``highlight`` marks one bar."""
    width = max(720, 28 * len(bars))
    top, bottom, left = 12, 28, 8
    peak = max((v for _, v in bars), default=0.0) or 1.0
    step = (width - left * 2) / max(1, len(bars))
    parts = [
        f'<svg class="chart" data-testid="{escape(testid)}" viewBox="0 0 {width} {height}" '
        f'role="img" preserveAspectRatio="xMidYMid meet">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - left}" y2="{height - bottom}" '
        'class="axis"/>',
    ]
    for i, (label, value) in enumerate(bars):
        h = (height - top - bottom) * max(0.0, value) / peak
        x = left + i * step + step * 0.15
        cls = "bar hl" if i == highlight else "bar"
        parts.append(
            f'<rect class="{cls}" x="{x:.1f}" y="{height - bottom - h:.1f}" '
            f'width="{step * 0.7:.1f}" height="{h:.1f}" data-label="{escape(label)}" '
            f'data-value="{value!r}"><title>{escape(label)}: {_fmt(value)} {escape(unit)}'
            "</title></rect>"
        )
        if (len(bars) - 1 - i) % label_every == 0:  # the last bar is always labelled
            parts.append(
                f'<text x="{x + step * 0.35:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle" class="tick">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def hbar_chart(bars: Sequence[tuple[str, float]], *, testid: str, unit: str = "") -> Markup:
    """Horizontal bars, one row per (label, value): long lists read well on a phone."""
    row, label_w, width = 24, 44, 480
    height = max(row, row * len(bars)) + 4
    peak = max((v for _, v in bars), default=0.0) or 1.0
    parts = [
        f'<svg class="chart hbar" data-testid="{escape(testid)}" '
        f'viewBox="0 0 {width} {height}" role="img">'
    ]
    for i, (label, value) in enumerate(bars):
        w = (width - label_w - 60) * max(0.0, value) / peak
        y = 2 + i * row
        parts.append(
            f'<text x="0" y="{y + 16}" class="tick">{escape(label)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
            f'data-label="{escape(label)}" data-value="{value!r}">'
            f"<title>{escape(label)}: {_fmt(value)} {escape(unit)}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" class="tick">{_fmt(value)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def dot_map(counts: Sequence[tuple[str, int]], *, testid: str) -> Markup:
    """Countries as dots on a plain longitude/latitude grid, sized by device count."""
    width, height = 720, 360
    peak = max((n for _, n in counts), default=0) or 1
    parts = [
        f'<svg class="chart map" data-testid="{escape(testid)}" viewBox="0 0 {width} {height}" '
        'role="img">',
        f'<rect class="sea" x="0" y="0" width="{width}" height="{height}"/>',
    ]
    for meridian in range(-150, 181, 30):
        gx = (meridian + 180) * width / 360
        parts.append(f'<line class="grid" x1="{gx}" y1="0" x2="{gx}" y2="{height}"/>')
    for parallel in range(-60, 61, 30):
        gy = (90 - parallel) * height / 180
        parts.append(f'<line class="grid" x1="0" y1="{gy}" x2="{width}" y2="{gy}"/>')
    for code, n in counts:
        if code not in CENTROIDS or n <= 0:
            continue
        lon, lat = CENTROIDS[code]
        x, y = (lon + 180) * width / 360, (90 - lat) * height / 180
        r = 5 + 20 * (n / peak) ** 0.5
        parts.append(
            f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" '
            f'data-label="{escape(code)}" data-value="{n}"><title>{escape(code)}: {n} devices'
            f'</title></circle><text class="dot-label" x="{x:.1f}" y="{y - r - 3:.1f}" '
            f'text-anchor="middle">{escape(code)} {n}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
