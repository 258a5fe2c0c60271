"""Staking and blocks end to end, through the CLI, on the shared local network
(fast blocks: a block-hour is 10 s): stake, earn, verify, and fail to verify
an altered copy of a block's inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from idlegrid.localnet import LocalNetwork
from idlegrid.sdk import Client

pytestmark = pytest.mark.e2e


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idlegrid.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_stake_earn_and_verify_blocks(cloud: LocalNetwork, tmp_path: Path) -> None:
    server = ("--server", cloud.server_url)
    key = str(cloud.keypair_path(2))  # the device's own key: it owns itself
    device = cloud.device_id(2)
    assert cli("wallet", "faucet", "IO", "300", "--keypair", key, *server).returncode == 0
    out = cli("stake", device, "150", "--keypair", key, "--json", *server)
    assert out.returncode == 1 and json.loads(out.stdout)["code"] == "stake_below_minimum"
    out = cli("stake", device, "200", "--keypair", key, "--json", *server)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["meets_minimum"] is True
    staked_at = time.time()

    with Client(cloud.server_url) as client:

        def earned() -> int | None:
            for b in client.list_blocks(10).items:
                if b.status == "completed" and b.starts_at > staked_at:
                    block = client.get_block(b.number)
                    paid = {r["device_id"] for r in block.outputs["rewards"]}  # type: ignore[index, union-attr]
                    if device in paid:
                        return b.number
            return None

        number = cloud.wait_for(earned, 90, "a block that rewards the staked device")
        audit = client.ledger_audit()
        assert audit.ok, [c for c in audit.checks if not c.ok]

    out = cli("blocks", "verify", str(number), "--json", *server)
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True, out.stdout
    shown = json.loads(cli("blocks", "show", str(number), "--json", *server).stdout)
    altered = shown["inputs"]
    entry = next(d for d in altered["devices"] if d["device_id"] == device)
    entry["uptime_s"] = max(0, entry["uptime_s"] - 60)
    (tmp_path / "altered.json").write_text(json.dumps(altered))
    out = cli("blocks", "verify", str(number), "--inputs", str(tmp_path / "altered.json"), *server)
    assert out.returncode == 1 and "does not verify" in out.stdout

    rewards = json.loads(cli("rewards", device, "--json", *server).stdout)
    mine = next(r for r in rewards["items"] if r["block"] == number)
    assert float(mine["units"]) > 0 and not mine["excluded_because"]
    listed = json.loads(cli("blocks", "list", "--json", *server).stdout)
    assert any(b["number"] == number and b["status"] == "completed" for b in listed["items"])
