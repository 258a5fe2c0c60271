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

from idlegrid.core.block_publication import published_rows
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
                    assert block.inputs is not None and block.outputs is not None
                    nominated, _ = published_rows(block.inputs, block.outputs)
                    if any(r["device_id"] == device and r["units"] for r in nominated):
                        return b.number
            return None

        number = cloud.wait_for(earned, 90, "a block that rewards the staked device")
        audit = client.ledger_audit()
        assert audit.ok, [c for c in audit.checks if not c.ok]

    out = cli("blocks", "verify", str(number), "--json", *server)
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True, out.stdout
    shown = json.loads(cli("blocks", "show", str(number), "--json", *server).stdout)
    altered = shown["inputs"]
    index = altered["devices"]["device_id"].index(device)
    altered["devices"]["uptime_s"][index] -= 60
    (tmp_path / "altered.json").write_text(json.dumps(altered))
    out = cli("blocks", "verify", str(number), "--inputs", str(tmp_path / "altered.json"), *server)
    assert out.returncode == 1 and "does not verify" in out.stdout

    rewards = json.loads(cli("rewards", device, "--json", *server).stdout)
    mine = next(r for r in rewards["items"] if r["block"] == number)
    assert float(mine["units"]) > 0 and not mine["excluded_because"]
    listed = json.loads(cli("blocks", "list", "--json", *server).stdout)
    assert any(b["number"] == number and b["status"] == "completed" for b in listed["items"])

    # Rewards wait in the wallet's credits until it claims them, once.
    owed = json.loads(cli("earnings", device, "--json", *server).stdout)
    assert float(owed["unclaimed"]) > 0 and owed["credited_through"] >= number
    out = cli("claim", "--keypair", key, "--json", *server)
    assert out.returncode == 0, out.stdout + out.stderr
    first = json.loads(out.stdout)
    assert float(first["amount"]) > 0 and first["through"] >= number
    out = cli("claim", "--keypair", key, "--json", *server)
    if out.returncode:  # nothing new: a double claim is refused with its code
        assert json.loads(out.stdout)["code"] == "nothing_to_claim"
    else:  # a fast block closed in between: only blocks after the first claim
        assert json.loads(out.stdout)["through"] > first["through"]
    with Client(cloud.server_url) as client:
        audit = client.ledger_audit()
    assert audit.ok, [c for c in audit.checks if not c.ok]
