"""``idlegrid demo`` (``make demo``): a local network, shown step by step.

Three worker agents join a fresh control plane, their hardware is detected and
registered, each proves its compute and becomes cluster ready; a fourth agent
that claims an RTX 4090 on this CPU fails its proof; one agent is killed and
its device goes down, then it comes back and its uptime is accounted. Then a
buyer deposits, deploys a 2-device Ray cluster, runs batch inference on it
(examples/batch_inference.py as a Ray job), terminates it, and the demo prints
the bill, the providers' earnings, the fees and the burn. Last, a provider
stakes its device, a reward block (fast: one block-hour every 5 s) pays it,
the block is recomputed from its published inputs, and the provider claims.
The demo ends with a summary and exit code 0, or names the step that failed
and exits 1.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.panel import Panel

from idlegrid.cli.common import console, fmt_duration
from idlegrid.cli.connect import Joined, on_overlay
from idlegrid.cli.devices import devices_table
from idlegrid.core.fees import format_amount, units
from idlegrid.identity import load_or_create_keypair
from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import (
    ClusterView,
    DeployRequest,
    DeviceStatus,
    FaucetRequest,
    ProofStatus,
    ProofView,
    WithdrawRequest,
)
from idlegrid.sdk import Client

if TYPE_CHECKING:
    from solders.keypair import Keypair

WORKERS = 3
HEARTBEAT_S = 1.0
MIN_UPTIME_S = 3.0  # 12 h in production
BLOCK_S = 5
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_demo(*, port: int, data_dir: Path) -> int:
    shutil.rmtree(data_dir, ignore_errors=True)
    net = LocalNetwork(
        data_dir,
        port=port,
        workers=WORKERS,
        overlay=True,  # clusters form over WireGuard where the agents can run it
        heartbeat_interval_s=HEARTBEAT_S,
        min_uptime_s=MIN_UPTIME_S,
        # Fee revenue is bought back and burned every few seconds, not hourly,
        # so the demo can show the burn.
        # Blocks are 5 s long (block-hours: the rules read 5 s as an hour), so the
        # demo can show one.
        env={"IDLEGRID_BUYBACK_INTERVAL_S": "2", "IDLEGRID_BLOCK_INTERVAL_S": str(BLOCK_S)},
    )
    started = time.monotonic()
    try:
        with net, Client(net.server_url) as client:
            _run(net, client)
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]demo failed[/red]: {exc}")
        console.print(f"logs: {net.data_dir / 'logs'}")
        return 1
    console.print(f"[green]demo finished[/green] in {time.monotonic() - started:.1f}s")
    return 0


def _say_overlay(net: LocalNetwork) -> None:
    """One line on how this network's clusters will be joined."""
    if net.overlay_on:
        console.print(
            "clusters form over a WireGuard overlay of their own (a relay and the "
            "rendezvous run beside the control plane)"
        )
    elif net.overlay_off is not None:
        console.print(
            f"[yellow]no overlay here ({net.overlay_off}): clusters form on the "
            "agents' direct addresses[/yellow]"
        )


def _up(client: Client) -> list[str]:
    return [d.id for d in client.list_devices(status=DeviceStatus.UP).items]


def _run(net: LocalNetwork, client: Client) -> None:
    console.rule("[bold]idlegrid local network")
    with console.status("starting the control plane (SQLite, embedded defaults)…"):
        net.start_server()
    console.print(
        f"control plane at [bold]{net.server_url}[/bold]  "
        f"(heartbeat every {HEARTBEAT_S:.0f}s, a device is down after "
        f"{2.5 * HEARTBEAT_S:.1f}s of silence)"
    )
    _say_overlay(net)

    console.rule("1. three providers join without asking anyone")
    for i in range(WORKERS):
        net.start_worker(i)
        console.print(f"started worker agent {i}: new Solana keypair {net.keypair_path(i).name}")
    with console.status("waiting for the agents to detect their hardware and register…"):
        net.wait_for(lambda: len(_up(client)) == WORKERS, 60, f"{WORKERS} devices up")
    devices = client.list_devices().items
    console.print(devices_table(devices))
    sandbox = devices[0].sandbox
    if sandbox.backend == "none":
        console.print(
            f"[yellow]buyers' code would run unsandboxed here ({sandbox.reason}): these "
            "devices are rented only to their owners[/yellow]"
        )
    else:
        console.print(
            f"buyers' Ray nodes run in the {sandbox.backend} sandbox, which enforces "
            f"{', '.join(sandbox.enforces)} (docs/clusters.md)"
        )
    console.print(f"while the demo runs: idlegrid devices list --json --server {net.server_url}")

    console.rule("2. every device proves its compute (docs/proof-of-compute.md)")
    with console.status("waiting for proofs of compute and minimum uptime…"):
        net.wait_for(
            lambda: client.list_devices(readiness="cluster_ready").total == WORKERS,
            60,
            f"{WORKERS} devices cluster ready",
        )
    for d in client.list_devices().items:
        (proof, *_) = client.proofs(d.id).items
        console.print(
            f"{d.name}: proof {proof.status.value}, {proof.rounds} rounds of "
            f"{proof.n}×{proof.n} in {proof.committed_at - proof.fetched_at:.2f}s: "  # type: ignore[operator]
            f"{proof.measured_tflops:.3f} TFLOPS measured, {proof.claimed_tflops:.3f} "
            f"claimed → {d.readiness.value}"
        )

    console.rule("3. a liar joins: a CPU that claims an RTX 4090")
    liar_file = net.data_dir / "liar-hardware.json"
    liar_file.write_text(_claimed_rtx_4090())
    net.start_worker(WORKERS, "--hardware-file", str(liar_file))
    with console.status("the liar must multiply at a 4090's rate; waiting for its proof…"):
        liar = net.wait_for(
            lambda: _failed_proof(client, net.device_id(WORKERS)), 60, "the liar's proof to fail"
        )
    console.print(
        f"liar's proof [red]{liar.status.value}[/red]: {liar.reason} "
        f"(deadline {liar.deadline_s:.1f}s for {liar.work_flop / 1e12:.0f} TFLOP); "
        "it is never hired or rewarded"
    )
    net.kill_worker(WORKERS)

    console.rule("4. a provider's machine dies")
    victim = next(d for d in devices if d.id == net.device_id(1))
    net.kill_worker(1)
    killed = time.monotonic()
    console.print(f"killed worker agent 1 ({victim.name}, {victim.id[:10]}…) with SIGKILL")
    with console.status("waiting for the reaper to notice the silence…"):
        net.wait_for(
            lambda: client.get_device(victim.id).status is DeviceStatus.DOWN,
            15 * HEARTBEAT_S,
            "the dead device to be marked down",
        )
    detected = time.monotonic() - killed
    console.print(f"device marked [red]down[/red] {detected:.1f}s after the kill")

    console.rule("5. it comes back")
    net.start_worker(1)
    with console.status("restarting worker agent 1 with the same keypair…"):
        net.wait_for(
            lambda: client.get_device(victim.id).status is DeviceStatus.UP,
            60,
            "the device to come back up",
        )
    time.sleep(3 * HEARTBEAT_S)  # let a few heartbeats accrue uptime and be flushed
    devices = client.list_devices().items
    console.print(devices_table(devices))
    detail = client.get_device(victim.id)
    events = ", ".join(
        e.kind + ("→" + str(e.detail.get("to")) if "to" in e.detail else "")
        for e in reversed(detail.events)
    )
    console.print(f"events of {victim.name}: {events}")

    console.rule("6. the IO token: an SPL token in the embedded Solana VM")
    buyer_key, _ = load_or_create_keypair(net.data_dir / "keys" / "buyer.json")
    buyer = str(buyer_key.pubkey())
    with Client(net.server_url, keypair=buyer_key) as wallet:
        wallet.faucet(buyer, FaucetRequest(asset="USDC", amount="250"))
        wallet.faucet(buyer, FaucetRequest(asset="IO", amount="100"))
        wallet.withdraw(buyer, WithdrawRequest(id="demo-1", asset="IO", amount="40"))
        balances = ", ".join(f"{b.balance} {b.asset}" for b in wallet.wallet(buyer).balances)
    supply = client.token_supply()
    audit = client.ledger_audit()
    console.print(f"a buyer deposited 250 USDC, got 100 IO and withdrew 40 IO on chain: {balances}")
    console.print(
        f"IO supply: {supply.circulating} circulating of {supply.max} max "
        f"({supply.genesis} at genesis, {supply.emitted} emitted, {supply.burned} burned)"
    )
    console.print(
        f"ledger audit: {'[green]ok[/green]' if audit.ok else '[red]FAILED[/red]'} "
        f"({len(audit.checks)} checks: book balanced, hash chain, book = chain, supply)"
    )
    if not audit.ok:
        raise RuntimeError("the ledger audit failed")

    bill = _rent_a_cluster(net, client, buyer_key)
    reward = _earn_a_block_reward(net, client)

    devices = [d for d in devices if d.name != f"local-{WORKERS}"]
    up = [d for d in devices if d.status is DeviceStatus.UP]
    ready = [d for d in devices if d.readiness.value == "cluster_ready"]
    total_uptime = sum(d.uptime_s for d in devices)
    console.print(
        Panel.fit(
            f"honest devices: {len(devices)}  up: {len(up)}  cluster ready: {len(ready)}\n"
            f"liar (claims an RTX 4090 on a CPU): proof {liar.reason}\n"
            f"hardware: " + "; ".join(sorted({f"{d.kind.value}/{d.model}" for d in devices})) + "\n"
            f"failure detected in {detected:.1f}s (TTL {2.5 * HEARTBEAT_S:.1f}s)\n"
            f"uptime accounted: {fmt_duration(total_uptime)} across all devices\n"
            f"cluster: {bill}\n"
            f"block reward: {reward}\n"
            f"ledger audit: {'ok' if audit.ok else 'FAILED'}",
            title="summary",
        )
    )
    if len(up) != WORKERS:
        raise RuntimeError(f"expected {WORKERS} devices up at the end, found {len(up)}")


def _earn_a_block_reward(net: LocalNetwork, client: Client) -> str:
    """Step 8: stake a device, wait for a block that pays it, verify it, claim."""
    from idlegrid.core import block_publication, rewards

    console.rule("8. staking and hourly reward blocks (docs/rewards.md)")
    owner_key, _ = load_or_create_keypair(net.keypair_path(0))  # the device owns itself
    device = str(owner_key.pubkey())
    with Client(net.server_url, keypair=owner_key) as owner:
        owner.faucet(device, FaucetRequest(asset="IO", amount="200"))
        stake = owner.stake(device, "200")
        console.print(
            f"{device[:10]}… staked {stake.active} IO (its minimum: {stake.minimum} IO); "
            f"a block-hour lasts {BLOCK_S} s here"
        )
        staked_at = time.time()

        def paid_block() -> int | None:
            for b in client.list_blocks(20).items:
                if b.status == "completed" and b.starts_at > staked_at:
                    view = client.get_block(b.number)
                    if view.inputs and view.outputs:
                        nominated, _ = block_publication.published_rows(view.inputs, view.outputs)
                        if any(r["device_id"] == device and r["units"] for r in nominated):
                            return b.number
            return None

        with console.status("waiting for a block that rewards the staked device…"):
            number = net.wait_for(paid_block, 60, "a block that rewards the staked device")
        view = client.get_block(number)
        assert view.inputs is not None and view.outputs_hash is not None
        ok = rewards.verify_block(view.inputs, view.outputs_hash)
        console.print(
            f"block {number}: emission {view.emission} IO, {view.nominated} nominated, "
            f"{view.excluded} left out (every reason published); recomputed here from "
            f"its inputs: {'[green]verified[/green]' if ok else '[red]DIFFERENT[/red]'}"
        )
        if not ok:
            raise RuntimeError(f"block {number} does not verify from its published inputs")
        claim = owner.claim_rewards()
        console.print(
            f"the provider claimed [bold]{claim.amount} IO[/bold] (blocks up to {claim.through}); "
            f"check any block yourself: idlegrid blocks verify {number} --server {net.server_url}"
        )
    audit = client.ledger_audit()
    if not audit.ok:
        raise RuntimeError("the ledger audit failed after the claim")
    return f"block {number} verified; {claim.amount} IO claimed"


def _rent_a_cluster(net: LocalNetwork, client: Client, buyer_key: Keypair) -> str:
    """Step 7: deploy, run batch inference, terminate; print the bill. Returns a summary."""
    console.rule("7. IO Cloud: a buyer rents a 2-device Ray cluster")
    buyer = str(buyer_key.pubkey())
    with Client(net.server_url, keypair=buyer_key) as shop:
        start_io = _io(shop, buyer)
        quote = shop.quote(DeployRequest(name="demo-inference", hardware="cpu", quantity=2))
        console.print(
            f"quote: {quote.devices} CPU devices for {quote.hours} h at "
            f"{quote.price_per_device_hour} IO/device-hour = {quote.total} IO "
            f"(buyer fee {quote.buyer_fee}); paid into escrow"
        )
        asked = time.monotonic()
        view = shop.deploy(quote.id)
        with console.status("deploying: agents learn their assignment from heartbeats…") as st:
            while view.status not in ("running", "failed"):
                if time.monotonic() - asked > 120:
                    raise RuntimeError(f"the cluster did not start: {view.status}")
                up = sum(1 for n in view.nodes if n.state == "up" and n.left_at is None)
                st.update(f"{view.status}: {up}/{len(view.nodes)} Ray nodes up")
                time.sleep(0.2)
                view = shop.get_cluster(view.id)
        if view.status != "running" or not view.dashboard_url or not view.ray_token:
            raise RuntimeError(f"the cluster failed: {view.reason}")
        console.print(
            f"cluster {view.id[:10]}… [green]running[/green] after "
            f"{time.monotonic() - asked:.1f}s: Ray at {view.ray_address}, jobs at "
            f"{view.dashboard_url}, token auth on"
        )
        with contextlib.ExitStack() as joined:
            if on_overlay(view):
                # Its nodes reach each other over WireGuard; so does the buyer, as a peer.
                peer = joined.enter_context(Joined(net.server_url, buyer_key, view.id))
                view = peer.wait()
                assert peer.place is not None
                console.print(
                    "over the cluster's WireGuard overlay: the buyer joined as "
                    f"{peer.place.address}"
                )
            _run_inference(view)
        done = shop.terminate_cluster(view.id)
        time.sleep(3)  # the buy-back loop burns the fees
        end_io = _io(shop, buyer)
    return _print_bill(client, done, start_io - end_io)


def _run_inference(view: ClusterView) -> None:
    """Batch inference (examples/batch_inference.py) as a Ray job; its RESULT printed."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    assert view.dashboard_url and view.ray_token
    jobs = JobSubmissionClient(
        view.dashboard_url, headers={"Authorization": f"Bearer {view.ray_token}"}
    )
    job = jobs.submit_job(
        entrypoint="python batch_inference.py", runtime_env={"working_dir": str(EXAMPLES)}
    )
    with console.status("batch inference with Ray Data (examples/batch_inference.py)…"):
        status = jobs.get_job_status(job)
        while not status.is_terminal():
            time.sleep(0.5)
            status = jobs.get_job_status(job)
    logs = jobs.get_job_logs(job)
    if status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"the batch inference job {status.value}: {logs[-2000:]}")
    result = json.loads(
        next(x for x in logs.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT ")
    )
    console.print(f"job {status.value}: {json.dumps(result)}")


def _io(client: Client, owner: str) -> int:
    balance = next(b for b in client.wallet(owner).balances if b.asset == "IO")
    return units(balance.balance, "IO")


def _print_bill(client: Client, view: ClusterView, spent: int) -> str:
    charged = units(view.charged, "IO")
    fee = spent - charged
    console.print(
        f"terminated: paid {view.paid} IO into escrow, charged {view.charged} IO for the "
        f"time served, buyer fee {format_amount(fee, 'IO')}, refunded {view.refunded} IO"
    )
    for n in view.nodes:
        owner = client.get_device(n.device_id).owner
        earned = next(b for b in client.wallet(owner).balances if b.asset == "IO")
        console.print(
            f"  provider {n.device_id[:10]}… served as {n.role} for "
            f"{(n.left_at or 0) - (n.joined_at or 0):.1f}s: gross {n.paid} IO, "
            f"earned {earned.balance} IO after fees"
        )
    supply = client.token_supply()
    audit = client.ledger_audit()
    console.print(
        f"fees bought back and burned so far: {supply.burned} IO; "
        f"ledger audit {'[green]ok[/green]' if audit.ok else '[red]FAILED[/red]'}"
    )
    if not audit.ok:
        raise RuntimeError("the ledger audit failed after the rental")
    return f"charged {view.charged} IO, refunded {view.refunded} IO, burned {supply.burned} IO"


def _claimed_rtx_4090() -> str:
    """This machine's detected hardware, plus a GPU it does not have."""
    from idlegrid.protocol import DeviceKind, GpuInfo
    from idlegrid.worker.hardware import detect_hardware

    hw = detect_hardware()
    fake = GpuInfo(index=0, name="NVIDIA GeForce RTX 4090", vram_mb=24564)
    return hw.model_copy(update={"kind": DeviceKind.GPU, "gpus": [fake]}).model_dump_json()


def _failed_proof(client: Client, device_id: str) -> ProofView | None:
    items = client.proofs(device_id).items
    return next((p for p in items if p.status is ProofStatus.FAILED), None)
