"""Crash-safe money: every money path (withdrawal, deposit sweep, emission mint,
reward claim, buy-back burn, stake, stake withdrawal, slash burn), killed at every
named fault point, on SQLite and PostgreSQL. After a restart (whose start-up
drains the chain outbox) and a retry of the same request, the audit is clean,
book = chain, and the request came out exactly once: paid once, credited once,
minted once, burned once.

Each case runs ``tests/fault_driver.py`` twice in subprocesses: once armed with
``IDLEGRID_FAULT`` (it dies there, as ``kill -9`` would), once to restart and retry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from idlegrid import faults
from idlegrid.core import emission
from tests.fault_driver import CLAIMED, IO, PATHS

ROOT = Path(__file__).resolve().parent.parent


def drive(database_url: str, data_dir: Path, path: str, step: str, fault: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "IDLEGRID_FAULT"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fault_driver",
            database_url,
            str(data_dir),
            path,
            step,
            fault,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if fault:
        assert done.returncode == faults.EXIT_CODE, (done.returncode, done.stderr[-2000:])
        assert f"fault injected at {fault}" in done.stderr
        return {}
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("point", faults.POINTS)
@pytest.mark.parametrize("path", PATHS)
def test_a_crash_at_any_point_loses_nothing_and_pays_nothing_twice(
    database_url: str, tmp_path: Path, path: str, point: str
) -> None:
    drive(database_url, tmp_path, path, "act", fault=point)
    after = drive(database_url, tmp_path, path, "retry")
    assert after["audit"] == [], after
    assert after["outbox"].get("pending", 0) == 0 and after["outbox"].get("failed", 0) == 0
    genesis = emission.GENESIS_SUPPLY_UNITS
    if path == "withdrawal":
        assert after["wallet_chain_io"] == 1_234 * IO  # paid once on chain
        assert after["io"] == (50_000 - 1_234) * IO  # debited once in the book
    elif path == "deposit":
        assert after["usdc"] == 25_000_000  # credited once, lost never
    elif path == "emission":
        assert after["supply"] == genesis + emission.hour_amount(3)
    elif path == "claim":
        assert after["io"] == CLAIMED  # credited once, and moved once on chain (the audit)
    elif path == "burn":
        assert after["supply"] == genesis - 7 * IO
    elif path == "stake":
        assert after["io"] == (50_000 - 200) * IO  # the minimum (200 IO for one CPU), once
    elif path == "unstake":
        assert after["io"] == 50_000 * IO  # the whole stake back, once
    elif path == "slash":
        assert after["supply"] == genesis - 20 * IO  # 10% of the 200 IO stake, burned once
