"""One money path, run in its own process so a fault point can kill it (``tests/test_faults.py``).

    python -m tests.fault_driver DATABASE_URL DATA_DIR PATH STEP [FAULT]

STEP ``act`` makes what PATH needs (a funded wallet, a deposit waiting, fee
revenue, a registered device), then arms FAULT (a point of
``idlegrid/faults.py``) and runs PATH once; ``retry`` restarts, lets the
outbox reconcile and runs PATH again with the same request id, as a client
retrying after a crash would. Each step prints one JSON line for the test.
"""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal
from pathlib import Path

from solders.keypair import Keypair

from idlegrid.core import emission
from idlegrid.core.ledger import Transfer
from idlegrid.errors import NothingToClaim
from idlegrid.ledger.chain import Asset
from idlegrid.protocol import RegisterRequest
from idlegrid.server.db.models import Block, RewardCredit
from idlegrid.server.services.ledger import REWARDS, UNCLAIMED, fees_account, genesis_account
from idlegrid.server.settings import ServerSettings
from tests.conftest import FakeClock, Network, cpu_hardware

IO = 10**8
PATHS = ("withdrawal", "deposit", "emission", "claim", "burn", "stake", "unstake", "slash")
CLAIMED = 321 * IO  # what the seeded block credits the wallet
LATER_S = 40 * 86400  # past the 14-day unstake cooldown and the 30-day appeal window


def main(database_url: str, data_dir: str, path: str, step: str, fault: str = "") -> None:
    settings = ServerSettings(
        database_url=database_url, data_dir=Path(data_dir), environment="development"
    )
    net = Network(settings, FakeClock())  # start-up drains the outbox: the reconcile
    if step == "retry" and path in ("unstake", "slash"):
        net.clock.advance(LATER_S)
    state = net.state
    ledger = state.ledger
    key_file = Path(data_dir) / "user.key"
    if step == "act":
        key_file.write_bytes(bytes(Keypair()))
    user = Keypair.from_bytes(key_file.read_bytes())
    me = str(user.pubkey())
    out: dict[str, object] = {}
    if step == "act":
        if path in ("withdrawal", "stake", "unstake", "slash"):
            ledger.grant(me, Asset.IO, 50_000 * IO)
        if path == "deposit":
            address = ledger.deposit_address(me, Asset.USDC)
            ledger.chain.mint_to(Asset.USDC, address, 25_000_000)
        if path == "burn":
            with ledger.sessions.begin() as db:
                ledger.book.post(
                    db,
                    Transfer(
                        "fees:seed", genesis_account("community"), fees_account("IO"), "IO", 7 * IO
                    ),
                )
        if path == "claim":
            _credit_block(ledger, me, net.clock())
        if path in ("stake", "unstake", "slash"):
            view = net.client(user).register_device(RegisterRequest(hardware=cpu_hardware()))
            (Path(data_dir) / "device").write_text(view.id)
        if path in ("unstake", "slash"):
            device = view.id
            minimum = int(Decimal(state.staking.view(device).minimum) * IO)
            state.staking.stake(me, device, minimum)
            if path == "unstake":
                state.staking.unstake(me, device, minimum)
            else:
                state.staking.slash(device, "failed_proof", "fault test")
            net.clock.advance(LATER_S)
        if fault:
            os.environ["IDLEGRID_FAULT"] = fault
    if path == "withdrawal":
        out["replayed"] = ledger.withdraw(me, "w-1", Asset.IO, 1_234 * IO)[1]
    elif path == "deposit":
        out["credited"] = ledger.sweep_deposits(me).get("USDC", 0)
    elif path == "emission":
        ledger.emit(3)
    elif path == "claim":
        try:
            out["claimed"] = state.claims.claim(me).amount
        except NothingToClaim:  # the crashed claim was recorded: a retry finds nothing new
            out["claimed"] = None
    elif path == "burn":
        out["burned"] = sum(units for _, units in ledger.buyback_and_burn())
    elif path == "stake":
        device = (Path(data_dir) / "device").read_text()
        if Decimal(state.staking.view(device).active) == 0:  # a stake has no request id
            minimum = Decimal(state.staking.view(device).minimum)
            state.staking.stake(me, device, int(minimum * IO))
    elif path == "unstake":
        device = (Path(data_dir) / "device").read_text()
        if state.staking.view(device).cooling:
            state.staking.withdraw(me, device)
    elif path == "slash":
        state.staking.burn_expired()
    with ledger.sessions() as db:
        balances = ledger.balances(db, me)
        out["io"], out["usdc"] = balances["IO"][0], balances["USDC"][0]
        out["wallet_chain_io"] = _chain_balance(ledger, me, Asset.IO)
        out["supply"] = ledger.chain.supply(Asset.IO)
        out["outbox"] = ledger.outbox.counts(db)
    out["audit"] = [c.name for c in ledger.audit() if not c.ok]
    print(json.dumps(out))
    net.close()


def _credit_block(ledger, wallet: str, now: float) -> None:  # type: ignore[no-untyped-def]
    """Hour 0's emission minted, and block 0 crediting ``wallet`` part of it, as a
    closed block does (``BlockService._credit``): the claim then has a credit to take."""
    ledger.emit(0)
    ledger.outbox.drain()
    with ledger.sessions.begin() as db:
        db.add(
            Block(
                number=0,
                starts_at=now - 3600,
                length_s=3600,
                status="completed",
                emission=emission.hour_amount(0),
                created_at=now,
                closed_at=now,
                paid=CLAIMED,
            )
        )
        db.flush()
        ledger.book.post(db, Transfer("reward:0", REWARDS, UNCLAIMED, "IO", CLAIMED, code="reward"))
        db.add(RewardCredit(recipient=wallet, number=0, units=CLAIMED))


def _chain_balance(ledger, owner: str, asset: Asset) -> int:  # type: ignore[no-untyped-def]
    import spl.token.instructions as spl
    from solders.pubkey import Pubkey

    mint = Pubkey.from_string(ledger.chain.layout.mint(asset))
    ata = str(spl.get_associated_token_address(Pubkey.from_string(owner), mint))
    try:
        return int(ledger.chain.balance(ata))
    except Exception:
        return 0


if __name__ == "__main__":
    main(*sys.argv[1:6])
