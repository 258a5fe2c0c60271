"""Staking, hourly reward blocks and slashing through the API, in-process.

24 blocks over a mixed fleet: GPUs and CPUs, staked and not, co-staked, down
for part of the time, failing their proofs. Each block must pay exactly its
emission, leave the ineligible out with their reasons, split co-stakes
exactly, verify from its published inputs (and fail to when one is altered),
and leave the ledger audit green.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
from solders.keypair import Keypair
from sqlalchemy import func, select

from idlegrid.core import block_publication, rewards, seasons
from idlegrid.errors import (
    CoStakeLimit,
    InsufficientFunds,
    InternalError,
    InvalidTransition,
    NotFound,
    NothingToClaim,
    PermissionDenied,
    StakeBelowMinimum,
)
from idlegrid.ledger.chain import Asset
from idlegrid.protocol import (
    BlockSummary,
    HardwareInfo,
    HeartbeatRequest,
    RegisterRequest,
    SeasonCreate,
)
from idlegrid.server.db.models import Block, BlockReward, Device, DeviceUptime, RewardCredit
from idlegrid.server.loops import reap_and_flush
from idlegrid.server.settings import ServerSettings
from tests.conftest import FakeClock, Network, cpu_hardware, gpu_hardware

IO = 10**8
HOUR = 3600


class RewardFleet:
    """Devices registered through the API and made ready to earn by hand (a passed proof,
    a tier, hours of uptime before the first block, IO to stake), that heartbeat an hour
    at a time. (tests/test_clusters.py's ``HireableFleet`` makes devices cluster-ready
    instead.)"""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.keys: dict[str, Keypair] = {}
        self.down: set[str] = set()

    def add(
        self,
        name: str,
        hw: HardwareInfo,
        tier: int = 3,
        proof: bool = True,
        history_h: int = 5,
    ) -> str:
        kp = Keypair()
        device_id = str(kp.pubkey())
        self.keys[name] = kp
        client = self.net.client(kp)
        client.register_device(RegisterRequest(hardware=hw, location="DE", name=name))
        client.heartbeat(device_id)
        with self.net.state.devices.sessions.begin() as db:
            dev = db.get(Device, device_id)
            dev.tier = tier
            dev.status = "up"
            dev.proof_passed_at = self.net.clock() - 10 if proof else None
            dev.readiness = "cluster_ready" if proof else "not_reward_ready"
            dev.uptime_s += history_h * HOUR  # as the liveness flush keeps it
            for h in range(1, history_h + 1):  # up for the hours before the first block
                db.add(
                    DeviceUptime(
                        device_id=device_id, hour=int(self.net.clock()) - h * HOUR, seconds=HOUR
                    )
                )
        self.net.state.ledger.grant(device_id, Asset.IO, 100_000 * IO)
        return device_id

    def id(self, name: str) -> str:
        return str(self.keys[name].pubkey())

    def client(self, name: str):  # type: ignore[no-untyped-def]
        return self.net.client(self.keys[name])

    def hour(self, clock: FakeClock) -> None:
        """An hour of heartbeats every 10 minutes from every device not down."""
        for _ in range(6):
            clock.advance(600)
            for name, kp in self.keys.items():
                if self.id(name) not in self.down:
                    self.net.client(kp).heartbeat(self.id(name))
            reap_and_flush(self.net.state)

    def balance(self, pubkey: str) -> int:
        with self.net.state.ledger.sessions() as db:
            return self.net.state.ledger.balances(db, pubkey)["IO"][0]


def published_inputs(net: Network, number: int) -> dict[str, Any]:
    """A block's published inputs, as the API serves them (and as the service parses
    them for a season)."""
    served = json.loads(net.state.blocks.document(number, "inputs"))
    assert net.state.blocks.published_inputs(number) == served
    return cast(dict[str, Any], served)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> ServerSettings:
    """Heartbeats every 10 minutes (a 25-minute TTL), so an hour takes 6 of them."""
    return ServerSettings(
        database_url=database_url, data_dir=tmp_path, heartbeat_interval_s=600, min_uptime_s=0
    )


@pytest.fixture
def fleet(network: Network) -> RewardFleet:
    return RewardFleet(network)


def test_a_block_page_is_kept_at_publication_and_verified_by_the_loop(
    fleet: RewardFleet, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The explorer's block page reads what the block stored when it was published
    (its first rows, pools and notes), never the documents; the loop, not a page view,
    recomputes each block from its published inputs and records whether it verified."""
    from idlegrid.server.services import blocks as block_service

    monkeypatch.setattr(block_service, "PAGE_ROWS", 2)
    net = fleet.net
    for i in range(6):  # three proven, three not (staked, so published, and excluded)
        name = f"cpu-{i}"
        device = fleet.add(name, cpu_hardware(), proof=i < 3)
        fleet.client(name).stake(device, "200")
    net.state.blocks.tick()  # opens block 0
    fleet.hour(clock)
    clock.advance(5)
    assert net.state.blocks.tick() == [0]
    api = net.client()
    inputs = json.loads(api.block_document(0, "inputs"))
    outputs = json.loads(api.block_document(0, "outputs"))
    paid, excluded = block_publication.published_rows(inputs, outputs)
    assert len(paid) == 3 and len(excluded) == 3
    shown = net.state.blocks.page(0)
    assert (shown.paid, shown.excluded) == (paid[:2], excluded[:2])
    assert shown.pools == outputs["pools"] and shown.notes == outputs["notes"]
    assert shown.verified is True and net.state.blocks.verified(0) is True

    # Break the published inputs (as a block stored before the document store kept
    # them, in its column): the page is unchanged (it never reads them), and the
    # loop's next check of the block records that it no longer verifies.
    stored = net.state.blocks.document(0, "inputs")
    with net.state.blocks.sessions.begin() as db:
        block = db.get(Block, 0)
        assert block is not None and block.inputs_json is None
        block.inputs_json = stored.replace(b'"emission_units":', b'"emission_units":1')
        block.verified = None
    assert net.state.blocks.page(0).verified is None
    assert net.state.blocks.page(0).paid == paid[:2]
    assert net.state.blocks.check_published(10) == [0]
    assert net.state.blocks.verified(0) is False
    assert net.state.blocks.check_published(10) == []  # checked once, not every pass


def test_24_blocks_pay_exactly_and_verify(fleet: RewardFleet, clock: FakeClock) -> None:
    net = fleet.net
    h100 = gpu_hardware()  # 8 × H100: minimum 16,000 IO
    rtx = gpu_hardware("NVIDIA GeForce RTX 4090", 1, 24564)  # 1.25 → 250 IO
    names = {
        "gpu-staked": fleet.add("gpu-staked", h100),
        "gpu-costaked": fleet.add("gpu-costaked", rtx, tier=4),
        "gpu-unstaked": fleet.add("gpu-unstaked", h100),
        "gpu-failing": fleet.add("gpu-failing", h100, proof=False),
        "cpu-staked": fleet.add("cpu-staked", cpu_hardware(), tier=2),
        "cpu-flaky": fleet.add("cpu-flaky", cpu_hardware(), tier=1),
        "cpu-tier0": fleet.add("cpu-tier0", cpu_hardware(), tier=0),
    }
    for name, amount in [("gpu-staked", "16000"), ("gpu-costaked", "250"),
                         ("gpu-failing", "16000"), ("cpu-staked", "200"),
                         ("cpu-flaky", "200"), ("cpu-tier0", "200")]:  # fmt: skip
        fleet.client(name).stake(names[name], amount)
    backer = Keypair()
    backer_id = str(backer.pubkey())
    net.state.ledger.grant(backer_id, Asset.IO, 1_000 * IO)
    fleet.client("gpu-costaked").set_costake_share(names["gpu-costaked"], 2_000)
    net.client(backer).costake(names["gpu-costaked"], "125")
    with pytest.raises(CoStakeLimit):  # 125 + 200 > the owner's 250
        net.client(Keypair()).costake(names["gpu-costaked"], "200")

    authority = net.client(net.state.ledger.authority)
    season = authority.create_season(
        SeasonCreate(name="s1", starts_block=2, ends_block=10, gpu_points=9_000,
                     cpu_points=1_000, points_per_io=90)
    )  # fmt: skip
    assert season.status == "announced" and season.rules_hash

    net.state.blocks.tick()  # opens block 0 at this hour
    balances = {pk: fleet.balance(pk) for pk in [*names.values(), backer_id]}
    for n in range(24):
        fleet.down = {names["cpu-flaky"]} if 6 <= n < 12 else set()
        fleet.hour(clock)
        clock.advance(5)  # past the flusher's grace
        assert n in net.state.blocks.tick()
        clock.advance(-5)

    with net.state.blocks.sessions() as db:
        blocks = list(
            db.scalars(select(Block).where(Block.status == "completed").order_by(Block.number))
        )
        assert [b.number for b in blocks] == list(range(24))
        # Every block's documents are in the document store, none in the table.
        store = net.state.blocks.documents
        assert all(store.has(b.inputs_hash) and store.has(b.outputs_hash) for b in blocks)
        assert all(b.inputs_json is None for b in blocks)
        assert all(b.outputs_json is None for b in blocks)
        inputs = {b.number: published_inputs(net, b.number) for b in blocks}
        for b in blocks:
            rows = list(db.scalars(select(BlockReward).where(BlockReward.number == b.number)))
            assert sum(r.units for r in rows) == b.emission == b.paid  # exact, to the unit
            reasons = {r.device_id: r.reasons for r in rows if r.reasons}
            assert "stake_below_minimum" in reasons[names["gpu-unstaked"]]
            assert "proof_not_passed" in reasons[names["gpu-failing"]]
            assert "tier_zero" in reasons[names["cpu-tier0"]]
            paid = {r.device_id for r in rows if r.units}
            assert paid.isdisjoint(reasons)
            if 6 <= b.number < 12:
                assert "no_uptime_this_hour" in reasons[names["cpu-flaky"]]
            else:
                assert names["cpu-flaky"] in paid
            # Published, and recomputable by anyone from the inputs alone.
            assert rewards.verify_block(inputs[b.number], b.outputs_hash)
            block = rewards.compute_block(block_publication.inputs_from_dict(inputs[b.number]))
            co = next(r for r in block.rewards if r.device_id == names["gpu-costaked"])
            ((staker, co_units),) = co.costakers
            assert staker == backer_id and co.owner_units + co_units == co.units
            # 20 % offered for a co-stake as large as the owner's; 125 of 250 earns 10 %.
            assert co_units in (co.units * 1000 // 10_000, co.units * 1000 // 10_000 + 1)
        # Altering any published input breaks verification.
        published = inputs[3]
        for column in ("cumulative_uptime_s", "stake_units", "proof_passed"):
            altered = {**published, "devices": dict(published["devices"])}
            values = list(altered["devices"][column])
            values[0] = not values[0] if column == "proof_passed" else values[0] + 1
            altered["devices"][column] = values
            assert not rewards.verify_block(altered, blocks[3].outputs_hash), column

        # Every wallet received exactly what the blocks say it earned.
        earned: dict[str, int] = {}
        for b in blocks:
            block = rewards.compute_block(block_publication.inputs_from_dict(inputs[b.number]))
            for r in block.rewards:
                earned[r.owner] = earned.get(r.owner, 0) + r.owner_units
                for s, u in r.costakers:
                    earned[s] = earned.get(s, 0) + u
    # The season: points for verified devices only, IO at 90:1, recomputable.
    done = net.client().get_season(season.id)
    assert done.status == "completed" and done.results_hash
    core_season = seasons.season_from_dict(done.results["season"])  # type: ignore[index]
    assert seasons.verify_season(core_season, [inputs[n] for n in range(2, 10)], done.results_hash)
    assert not seasons.verify_season(
        core_season, [inputs[n] for n in range(2, 9)], done.results_hash
    )
    standings = {x.device_id for x in done.standings}
    assert names["gpu-failing"] not in standings and names["gpu-unstaked"] in standings
    results = seasons.compute_season(core_season, [inputs[n] for n in range(2, 10)])
    for owner, units in results.owner_units().items():
        earned[owner] = earned.get(owner, 0) + units

    # A block is never credited twice, even when its pass is retried.
    assert net.state.blocks.close(5) is False
    with net.state.blocks.sessions.begin() as db:
        db.get(Block, 5).status = "failed"
    assert net.state.blocks.close(5)
    audit = net.state.ledger.audit()
    assert all(c.ok for c in audit), [c for c in audit if not c.ok]

    # Block rewards wait to be claimed; the season paid out directly.
    wallets = {pk: kp for kp in [*fleet.keys.values(), backer] if (pk := str(kp.pubkey()))}
    for pk, before in balances.items():
        block_units = earned.get(pk, 0) - results.owner_units().get(pk, 0)
        owed = net.client().reward_balance(pk)
        assert round(float(owed.unclaimed) * IO) == block_units
        assert (owed.claimed_through, owed.credited_through) == (-1, 23 if block_units else -1)
        if block_units:
            claim = net.client(wallets[pk]).claim_rewards()
            assert round(float(claim.amount) * IO) == block_units and claim.through == 23
            with pytest.raises(NothingToClaim) as twice:  # a double claim
                net.client(wallets[pk]).claim_rewards()
            assert twice.value.details["claimed_through"] == 23
        assert fleet.balance(pk) - before == earned.get(pk, 0)
    assert earned[backer_id] > 0
    audit = net.state.ledger.audit()
    assert all(c.ok for c in audit), [c for c in audit if not c.ok]
    assert "unclaimed rewards = credits not yet claimed" in {c.name for c in audit}
    with net.state.blocks.sessions() as db:  # claimed credits are gone; their sums stay
        left = {r.recipient for r in db.scalars(select(RewardCredit))}
        assert left.isdisjoint(p for p in balances if earned.get(p))
    assert net.client().reward_balance(backer_id).earned != "0.00000000"

    # The published documents, byte for byte as hashed.
    api = net.client()
    for b in blocks[:3]:
        assert hashlib.sha256(api.block_document(b.number, "inputs")).hexdigest() == b.inputs_hash
        outputs = api.block_document(b.number, "outputs")
        assert hashlib.sha256(outputs).hexdigest() == b.outputs_hash
    view = api.get_block(blocks[2].number)  # the documents spliced in as stored
    assert view.inputs == json.loads(api.block_document(blocks[2].number, "inputs"))
    assert view.outputs == json.loads(api.block_document(blocks[2].number, "outputs"))
    (listed,) = [b for b in api.list_blocks(100).items if b.number == blocks[2].number]
    assert BlockSummary.model_validate(view.model_dump(exclude={"inputs", "outputs"})) == listed
    assert net.state.blocks.verified(blocks[2].number) is True
    with pytest.raises(NotFound):
        api.block_document(10_000, "inputs")
    with pytest.raises(NotFound):  # still open: nothing published
        api.block_document(24, "outputs")

    view = net.client().device_rewards(names["gpu-staked"])
    assert len(view.items) == 24 and not view.items[0].excluded_because

    # A season announced after its blocks were published finishes from their documents.
    late = authority.create_season(
        SeasonCreate(name="late", starts_block=12, ends_block=16, gpu_points=900,
                     cpu_points=100, points_per_io=90)
    )  # fmt: skip
    assert net.state.seasons.finish(late.id)
    ended = net.client().get_season(late.id)
    core_late = seasons.season_from_dict(ended.results["season"])  # type: ignore[index]
    assert ended.status == "completed"
    assert seasons.verify_season(core_late, [inputs[n] for n in range(12, 16)], ended.results_hash)


def test_staking_refusals(fleet: RewardFleet, clock: FakeClock) -> None:
    cpu = fleet.add("cpu", cpu_hardware())
    owner = fleet.client("cpu")
    with pytest.raises(StakeBelowMinimum) as err:
        owner.stake(cpu, "150")
    assert err.value.details["minimum"] == "200.00000000"
    owner.stake(cpu, "200")
    with pytest.raises(PermissionDenied):
        fleet.net.client(Keypair()).stake(cpu, "500")
    with fleet.net.state.devices.sessions.begin() as db:
        db.get(Device, cpu).cluster_id = "f" * 32  # hired
    with pytest.raises(InvalidTransition) as hired:
        owner.unstake(cpu, "10")
    assert hired.value.details["reason"] == "hired"
    with fleet.net.state.devices.sessions.begin() as db:
        db.get(Device, cpu).cluster_id = None
    view = owner.unstake(cpu, "200")
    assert float(view.effective) == 0 and not view.meets_minimum
    with pytest.raises(InsufficientFunds):  # all of it is cooling already
        owner.unstake(cpu, "1")
    with pytest.raises(InvalidTransition):  # 14 days have not passed
        owner.withdraw_stake(cpu)
    before = fleet.balance(cpu)
    clock.advance(14 * 24 * HOUR + 1)
    owner.withdraw_stake(cpu)
    assert fleet.balance(cpu) - before == 200 * IO
    with pytest.raises(InvalidTransition):  # a double claim
        owner.withdraw_stake(cpu)
    assert all(c.ok for c in fleet.net.state.ledger.audit())


def test_slashes_are_shared_appealed_or_burned(fleet: RewardFleet, clock: FakeClock) -> None:
    net = fleet.net
    rtx = fleet.add("rtx", gpu_hardware("NVIDIA GeForce RTX 4090", 1, 24564))
    fleet.client("rtx").stake(rtx, "250")
    backer = Keypair()
    net.state.ledger.grant(str(backer.pubkey()), Asset.IO, 1_000 * IO)
    net.client(backer).costake(rtx, "100")
    authority = net.client(net.state.ledger.authority)
    with pytest.raises(PermissionDenied):
        net.client(Keypair()).slash(rtx, "idle_abuse", "not the authority")

    first = authority.slash(rtx, "idle_abuse", "ran a miner while idle")  # 25 %
    assert dict(first.shares) == {rtx: "62.50000000", str(backer.pubkey()): "25.00000000"}
    stake = net.client().get_stake(rtx)
    assert stake.active == "187.50000000" and stake.costakes[0].amount == "75.00000000"
    fleet.client("rtx").appeal_slash(first.id, "it was our own benchmark")
    assert authority.decide_slash(first.id, accept=True).status == "accepted"
    assert net.client().get_stake(rtx).active == "250.00000000"

    burned_before = net.client().token_supply().burned
    second = authority.slash(rtx, "failed_proof", "failed after verification")  # 10 %
    clock.advance(net.settings.slash_appeal_s + 1)
    assert net.state.staking.burn_expired() == 1
    statuses = {x.id: x.status for x in net.client().slashes(rtx).items}
    assert statuses == {first.id: "accepted", second.id: "burned"}
    burned = float(net.client().token_supply().burned) - float(burned_before)
    assert round(burned * IO) == 35 * IO == round(float(second.amount) * IO)
    with pytest.raises(InvalidTransition):
        fleet.client("rtx").appeal_slash(second.id, "too late")
    audit = net.state.ledger.audit()
    assert all(c.ok for c in audit), [c for c in audit if not c.ok]


def test_an_accepted_appeal_pays_a_costaker_who_left_its_part(
    fleet: RewardFleet, clock: FakeClock
) -> None:
    net = fleet.net
    rtx = fleet.add("rtx", gpu_hardware("NVIDIA GeForce RTX 4090", 1, 24564))
    fleet.client("rtx").stake(rtx, "250")
    backer = Keypair()
    backer_id = str(backer.pubkey())
    net.state.ledger.grant(backer_id, Asset.IO, 1_000 * IO)
    net.client(backer).costake(rtx, "100")
    authority = net.client(net.state.ledger.authority)
    slashed = authority.slash(rtx, "idle_abuse", "ran a miner while idle")  # 25 %: 25 IO of 100
    fleet.client("rtx").appeal_slash(slashed.id, "it was our own benchmark")
    net.client(backer).costake_exit(rtx)  # leaves while the appeal is heard
    clock.advance(21 * 24 * 3600)
    net.client(backer).withdraw_stake(rtx)
    assert fleet.balance(backer_id) == 975 * IO  # 1,000 - 100 staked + 75 left after the slash
    assert authority.decide_slash(slashed.id, accept=True).status == "accepted"
    assert fleet.balance(backer_id) == 1_000 * IO  # its 25 IO back, not lost in the stake
    assert net.client().get_stake(rtx).active == "250.00000000"
    audit = net.state.ledger.audit()
    assert all(c.ok for c in audit), [c for c in audit if not c.ok]


def test_misconduct_is_slashed_once(fleet: RewardFleet) -> None:
    """A hardware swap under the same device id is recorded and slashed (50 %), once."""
    net = fleet.net
    device = fleet.add("swapper", gpu_hardware())  # 8 × H100
    fleet.client("swapper").stake(device, "16000")
    fleet.client("swapper").register_device(
        RegisterRequest(hardware=gpu_hardware(count=4), location="DE", name="swapper")
    )
    assert net.state.staking.slash_misconduct() == 1
    assert net.state.staking.slash_misconduct() == 0
    (slash,) = net.client().slashes(device).items
    assert slash.reason == "hardware_swap" and slash.amount == "8000.00000000"
    assert "h100" in slash.evidence and slash.status == "pending"
    assert net.client().get_stake(device).active == "8000.00000000"


def test_idle_use_abuse_is_found_from_heartbeats_and_slashed_once(
    fleet: RewardFleet, clock: FakeClock
) -> None:
    """Sixteen minutes of 95 % CPU while idle: slashed 25 % (idle_abuse), once. A device
    under the same load while it has a proof to run is left alone."""
    net = fleet.net
    miner = fleet.add("miner", cpu_hardware())
    prover = fleet.add("prover", cpu_hardware())
    for name, device in (("miner", miner), ("prover", prover)):
        fleet.client(name).stake(device, "400")
    net.state.mailbox.set_challenge(prover, "a-proof-to-run")  # busy: the load is ours
    for _ in range(17):
        clock.advance(60)
        for name, device in (("miner", miner), ("prover", prover)):
            fleet.client(name).heartbeat(device, HeartbeatRequest(cpu_percent=95.0))
    net.state.staking.tick()
    net.state.staking.tick()  # each finding is slashed once
    (slash,) = net.client().slashes(miner).items
    assert slash.reason == "idle_abuse" and slash.amount == "100.00000000"  # 25 % of 400
    assert "idle yet loaded for 900 s" in slash.evidence and slash.status == "pending"
    assert net.client().slashes(prover).items == []
    audit = net.state.ledger.audit()
    assert all(c.ok for c in audit), [c for c in audit if not c.ok]


def test_unproven_unstaked_devices_are_counted_not_published(
    fleet: RewardFleet, clock: FakeClock
) -> None:
    """Free registrations cost the blocks nothing: a block's documents are the same
    size with 60 devices that never proved or staked anything as without them."""
    net = fleet.net
    device = fleet.add("cpu", cpu_hardware(), tier=2)
    fleet.client("cpu").stake(device, "200")
    proven = fleet.add("proven-unstaked", cpu_hardware(), tier=2)
    net.state.blocks.tick()
    fleet.hour(clock)
    clock.advance(5)
    assert net.state.blocks.tick()
    (quiet,) = [b for b in net.client().list_blocks().items if b.status == "completed"]
    for i in range(60):  # the flood: registered and heartbeating, nothing more
        fleet.add(f"fake-{i}", cpu_hardware(), proof=False)
    fleet.hour(clock)
    clock.advance(5)
    assert net.state.blocks.tick()
    flooded = net.client().get_block(quiet.number + 1)
    assert (quiet.unlisted, flooded.unlisted) == (0, 60)
    assert flooded.inputs is not None and quiet.number + 1 == flooded.number
    assert sorted(flooded.inputs["devices"]["device_id"]) == sorted([device, proven])
    sizes = [len(net.client().block_document(n, "inputs")) for n in (quiet.number, flooded.number)]
    assert abs(sizes[1] - sizes[0]) <= 0.01 * sizes[0], sizes
    assert flooded.nominated == quiet.nominated == 1 and flooded.excluded == 1


def test_racing_claims_pay_once(fleet: RewardFleet, clock: FakeClock) -> None:
    """Eight claims of one wallet at once: one is paid, the others are told
    nothing_to_claim, and the wallet gets exactly its credits."""
    net = fleet.net
    device = fleet.add("cpu", cpu_hardware(), tier=2)
    fleet.client("cpu").stake(device, "200")
    net.state.blocks.tick()
    fleet.hour(clock)
    clock.advance(5)
    assert net.state.blocks.tick()
    owed = net.client().reward_balance(device)
    assert float(owed.unclaimed) > 0
    before = fleet.balance(device)

    def claim() -> str:
        try:
            return fleet.client("cpu").claim_rewards().amount
        except NothingToClaim:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: claim(), range(8)))
    paid = [r for r in results if r != "refused"]
    assert paid == [owed.unclaimed] and results.count("refused") == 7
    assert fleet.balance(device) - before == round(float(owed.unclaimed) * IO)
    audit = net.state.ledger.audit()
    assert all(c.ok for c in audit), [c for c in audit if not c.ok]


def test_a_block_publishes_the_uptime_accounted_even_when_the_flusher_lags(
    fleet: RewardFleet, clock: FakeClock
) -> None:
    """Heartbeats accounted in memory and not yet flushed when the block closes (the
    flusher fell behind under load) are in the block: it flushes before it gathers.
    Heartbeats come from threads while another thread flushes and a third registers
    new devices, as in a server: no error, no deadlock, and the exact uptime."""
    import threading

    from idlegrid.errors import StaleRequest
    from idlegrid.server.db.models import DeviceUptime

    net = fleet.net
    names = [fleet.add(f"cpu-{i}", cpu_hardware()) for i in range(6)]
    net.state.blocks.tick()  # opens block 0
    with net.state.blocks.sessions() as db:
        start = db.get(Block, 0).starts_at
    stop = threading.Event()
    errors: list[BaseException] = []

    def flusher() -> None:  # behind: one pass every 0.3 s, while heartbeats keep coming
        while not stop.wait(0.3):
            try:
                reap_and_flush(net.state)
            except BaseException as e:  # pragma: no cover - the assertion below shows it
                errors.append(e)

    def registrations() -> None:  # strangers registering all the while
        while not stop.is_set():
            try:
                net.client(Keypair()).register_device(RegisterRequest(hardware=cpu_hardware()))
            except StaleRequest:
                pass  # signed just before the test's clock jumped 10 minutes
            except BaseException as e:  # pragma: no cover
                errors.append(e)

    flushing = threading.Thread(target=flusher)
    flushing.start()
    registering = threading.Thread(target=registrations)
    registering.start()
    try:
        for _ in range(6):
            clock.advance(600)
            beats = [
                threading.Thread(
                    target=lambda kp=fleet.keys[f"cpu-{i}"], d=d: fleet.net.client(kp).heartbeat(d)
                )
                for i, d in enumerate(names)
            ]
            for t in beats:
                t.start()
            for t in beats:
                t.join()
        clock.advance(5)
        assert 0 in net.state.blocks.tick()
    finally:
        stop.set()
        flushing.join()
        registering.join()
    assert not errors
    with net.state.blocks.sessions() as db:
        block = db.get(Block, 0)
        assert block is not None and block.status == "completed"
        published = block_publication.inputs_from_dict(published_inputs(net, 0)).devices
        uptime = dict(zip(published.device_id, published.uptime_s, strict=True))
        accounted = dict(
            db.execute(
                select(DeviceUptime.device_id, DeviceUptime.seconds).where(
                    DeviceUptime.hour == start
                )
            ).all()
        )
    for d in names:
        assert accounted[d] > 0
        assert uptime[d] == min(HOUR, rewards.block_hour_seconds(accounted[d], HOUR)), d


def _close_blocks(fleet: RewardFleet, clock: FakeClock, count: int) -> None:
    """``count`` more blocks of an hour of heartbeats each, closed by the loop."""
    net = fleet.net
    net.state.blocks.tick()  # opens the current block
    for _ in range(count):
        fleet.hour(clock)
        clock.advance(5)
        assert net.state.blocks.tick()
        clock.advance(-5)


def test_documents_are_stored_compressed_outside_the_tables(
    fleet: RewardFleet, clock: FakeClock
) -> None:
    """A published block's documents are in the document store, compressed, not in its
    row; they are served byte for byte as hashed and verify; a damaged file is never
    served, and the loop's check records that the block no longer verifies."""
    from idlegrid.server.docstore import DocumentCorrupt

    net = fleet.net
    for i in range(4):
        device = fleet.add(f"cpu-{i}", cpu_hardware(), tier=2)
        fleet.client(f"cpu-{i}").stake(device, "200")
    _close_blocks(fleet, clock, 1)
    store = net.state.blocks.documents
    assert store.root == net.state.settings.data_dir / "documents"
    with net.state.blocks.sessions() as db:
        row = db.execute(
            select(
                Block.inputs_json, Block.outputs_json, Block.inputs_hash, Block.outputs_hash
            ).where(Block.number == 0)
        ).one()
    assert row.inputs_json is None and row.outputs_json is None
    api = net.client()
    for which, digest in (("inputs", row.inputs_hash), ("outputs", row.outputs_hash)):
        served = api.block_document(0, which)
        assert hashlib.sha256(served).hexdigest() == digest
        assert store.get(digest) == served
        assert 0 < store.stored_bytes(digest) < len(served)  # compressed
    assert rewards.verify_published(
        api.block_document(0, "inputs"), api.block_document(0, "outputs")
    )
    assert net.state.blocks.verified(0) is True
    view = api.get_block(0)
    assert view.inputs == json.loads(api.block_document(0, "inputs"))

    path = store.path(row.outputs_hash)
    path.write_bytes(path.read_bytes()[:-9])  # truncated on disk
    with pytest.raises(DocumentCorrupt):
        store.get(row.outputs_hash)
    with pytest.raises(InternalError) as refused:  # 500 internal, saying which; never the bytes
        api.block_document(0, "outputs")
    assert refused.value.details["document"] == row.outputs_hash
    with net.state.blocks.sessions.begin() as db:
        db.get(Block, 0).verified = None
    assert net.state.blocks.check_published(10) == [0]
    assert net.state.blocks.verified(0) is False


def test_a_block_stored_before_the_document_store_is_still_served(
    fleet: RewardFleet, clock: FakeClock
) -> None:
    """A block published before the store kept its documents in its columns: with no
    file in the store, it is served from them, byte for byte, and verifies."""
    net = fleet.net
    device = fleet.add("cpu", cpu_hardware(), tier=2)
    fleet.client("cpu").stake(device, "200")
    _close_blocks(fleet, clock, 1)
    api = net.client()
    documents = {w: api.block_document(0, w) for w in ("inputs", "outputs")}
    store = net.state.blocks.documents
    with net.state.blocks.sessions.begin() as db:
        block = db.get(Block, 0)
        assert block is not None
        block.inputs_json, block.outputs_json = documents["inputs"], documents["outputs"]
        block.verified = None
        for digest in (block.inputs_hash, block.outputs_hash):
            store.path(digest).unlink()
    assert {w: api.block_document(0, w) for w in documents} == documents
    view = api.get_block(0)
    assert view.outputs == json.loads(documents["outputs"])
    assert net.state.blocks.check_published(10) == [0]
    assert net.state.blocks.verified(0) is True


def test_a_crash_after_the_store_write_publishes_nothing_and_is_retried(
    fleet: RewardFleet, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documents are written before the block's transaction commits: a failure
    between the two leaves the files unused and the block unpublished (no documents
    served, nothing credited), and the next pass publishes it, served from the store."""
    from idlegrid.server.services.blocks import BlockService

    net = fleet.net
    device = fleet.add("cpu", cpu_hardware(), tier=2)
    fleet.client("cpu").stake(device, "200")
    publish = BlockService._publish

    def publish_then_crash(self: BlockService, *args: Any) -> None:
        publish(self, *args)
        raise RuntimeError("the process died before the commit")

    monkeypatch.setattr(BlockService, "_publish", publish_then_crash)
    net.state.blocks.tick()
    fleet.hour(clock)
    clock.advance(5)
    assert net.state.blocks.tick() == []
    store = net.state.blocks.documents
    orphans = sorted(store.root.rglob("*.json.gz"))
    assert len(orphans) == 2  # the inputs and the outputs, written, never published
    with net.state.blocks.sessions() as db:
        block = db.get(Block, 0)
        assert block is not None and block.status == "failed" and block.outputs_hash is None
        assert db.scalar(select(func.count()).select_from(RewardCredit)) == 0
    with pytest.raises(NotFound):
        net.client().block_document(0, "outputs")

    monkeypatch.setattr(BlockService, "_publish", publish)
    assert net.state.blocks.tick() == [0]
    with net.state.blocks.sessions() as db:
        block = db.get(Block, 0)
        assert block is not None and block.status == "completed"
        digests = (block.inputs_hash, block.outputs_hash)
    for which, digest in zip(("inputs", "outputs"), digests, strict=True):
        assert hashlib.sha256(net.client().block_document(0, which)).hexdigest() == digest
    assert net.state.blocks.verified(0) is True


def test_old_per_device_reward_rows_are_pruned_credits_and_claims_are_kept(
    fleet: RewardFleet, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the newest 2 blocks kept, the loop deletes the per-device rows of older
    published blocks, a few devices a statement, and only those: every wallet credit
    and claim stays, and a device's reward list shows the blocks kept."""
    from idlegrid.server.db.models import RewardClaim
    from idlegrid.server.services import blocks as block_service

    net = fleet.net
    monkeypatch.setattr(net.state.blocks.settings, "block_rewards_keep_blocks", 0)
    names = []
    for i in range(3):
        names.append(fleet.add(f"cpu-{i}", cpu_hardware(), tier=2))
        fleet.client(f"cpu-{i}").stake(names[-1], "200")
    _close_blocks(fleet, clock, 2)
    fleet.client("cpu-0").claim_rewards()  # a claim of blocks 0 and 1
    _close_blocks(fleet, clock, 3)  # blocks 2, 3, 4: nothing pruned while keep is 0

    def counts() -> dict[str, int]:
        with net.state.blocks.sessions() as db:
            return {
                "rewards": db.scalar(select(func.count()).select_from(BlockReward)) or 0,
                "credits": db.scalar(select(func.count()).select_from(RewardCredit)) or 0,
                "claims": db.scalar(select(func.count()).select_from(RewardClaim)) or 0,
            }

    before = counts()
    assert before["rewards"] == 5 * 3 and before["credits"] and before["claims"] == 1
    assert len(net.client().device_rewards(names[1]).items) == 5

    monkeypatch.setattr(net.state.blocks.settings, "block_rewards_keep_blocks", 2)
    monkeypatch.setattr(block_service, "PRUNE_DEVICES_PER_STATEMENT", 2)
    assert net.state.blocks.prune_rewards(2) == 2 * 3  # two devices' blocks 0, 1, 2
    assert net.state.blocks.prune_rewards(2) == 3  # the third device's, and the sweep ends
    assert net.state.blocks.prune_rewards(2) == 0  # nothing new published since
    after = counts()
    assert after == {**before, "rewards": 2 * 3}
    with net.state.blocks.sessions() as db:
        kept = set(db.scalars(select(BlockReward.number)))
    assert kept == {3, 4}
    for device in names:
        view = net.client().device_rewards(device)
        assert [e.block for e in view.items] == [4, 3]
    # The pruned blocks' documents still say what each device earned.
    outputs = json.loads(net.client().block_document(0, "outputs"))
    paid, _ = block_publication.published_rows(published_inputs(net, 0), outputs)
    assert sorted(r["device_id"] for r in paid) == sorted(names)

    _close_blocks(fleet, clock, 1)  # block 5: the loop prunes block 3's rows
    with net.state.blocks.sessions() as db:
        assert set(db.scalars(select(BlockReward.number))) == {4, 5}
    assert counts()["claims"] == 1
