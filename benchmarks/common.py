"""What every benchmark here shares: the machine it ran on, peak memory, and
printing the results (a report for people, or ``--json`` for scripts).

Benchmarks run as scripts (``python benchmarks/NAME.py``), so they import this
as ``common``: the script's own folder is first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


def machine(**extra: Any) -> dict[str, Any]:
    """CPUs, processor and Python, plus what a benchmark adds (versions, models)."""
    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        **extra,
    }


def peak_rss_mb() -> float:
    """This process's peak resident set so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def finish(
    results: dict[str, Any],
    started: float,
    as_json: bool,
    print_report: Callable[[dict[str, Any]], None],
) -> int:
    """Stamp the total run time, then print JSON or the report; the exit code."""
    results["total_s"] = round(time.monotonic() - started, 1)
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print_report(results)
    sys.stdout.flush()
    return 0


def print_table(
    title: str, align: str, header: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """Plain columns, each aligned as ``align`` says: ``l`` left, ``r`` right."""
    widths = [max(map(len, col)) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for row in (header, *rows):
        cells = zip(row, widths, align, strict=True)
        print("  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in cells).rstrip())


def parse_counts(text: str, low: int = 1, high: int | None = None) -> list[int]:
    """``--sizes``: comma-separated whole numbers (``_`` allowed), each in [low, high],
    returned sorted and once each; anything else is an argparse error."""
    try:
        counts = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < low or (high is not None and counts[-1] > high):
        upper = f" to {high:,}" if high is not None else ""
        raise argparse.ArgumentTypeError(f"give comma-separated counts from {low:,}{upper}")
    return counts
