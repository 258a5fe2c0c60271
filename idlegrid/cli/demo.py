"""``idlegrid demo`` (``make demo``): a local network, shown step by step.

Three worker agents join a fresh control plane, their hardware is detected and
registered, each proves its compute and becomes cluster ready; a fourth agent
that claims an RTX 4090 on this CPU fails its proof; one agent is killed and
its device goes down, then it comes back and its uptime is accounted. The demo
ends with a summary and exit code 0, or names the step that failed and exits 1.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.panel import Panel

from idlegrid.cli.common import console, fmt_duration
from idlegrid.cli.devices import devices_table
from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import (
    DeviceStatus,
    FaucetRequest,
    ProofStatus,
    ProofView,
    WithdrawRequest,
)
from idlegrid.sdk import Client
from idlegrid.worker.keypair import load_or_create_keypair

WORKERS = 3
HEARTBEAT_S = 1.0
MIN_UPTIME_S = 3.0  # 12 h in production


def run_demo(*, port: int, data_dir: Path) -> int:
    shutil.rmtree(data_dir, ignore_errors=True)
    net = LocalNetwork(
        data_dir,
        port=port,
        workers=WORKERS,
        heartbeat_interval_s=HEARTBEAT_S,
        min_uptime_s=MIN_UPTIME_S,
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

    console.rule("1. three providers join without asking anyone")
    for i in range(WORKERS):
        net.start_worker(i)
        console.print(f"started worker agent {i}: new Solana keypair {net.keypair_path(i).name}")
    with console.status("waiting for the agents to detect their hardware and register…"):
        net.wait_for(lambda: len(_up(client)) == WORKERS, 60, f"{WORKERS} devices up")
    devices = client.list_devices().items
    console.print(devices_table(devices))
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
            f"ledger audit: {'ok' if audit.ok else 'FAILED'}",
            title="summary",
        )
    )
    if len(up) != WORKERS:
        raise RuntimeError(f"expected {WORKERS} devices up at the end, found {len(up)}")


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
