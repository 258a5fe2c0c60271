"""What every benchmark here shares: the machine it ran on, peak memory, and
printing the results (a report for people, or ``--json`` for scripts).

Benchmarks run as scripts (``python benchmarks/NAME.py``), so they import this
as ``common``: the script's own folder is first on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
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
