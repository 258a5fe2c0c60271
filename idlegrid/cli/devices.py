"""``idlegrid devices``: list and show devices; owners pause, resume, terminate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from idlegrid.cli.common import (
    DEFAULT_SERVER,
    JsonOpt,
    ServerOpt,
    call_and_show,
    console,
    fmt_duration,
    plain_table,
    print_json,
    reported_errors,
    signed_client,
)
from idlegrid.protocol import DeviceKind, DeviceStatus, DeviceView, Readiness
from idlegrid.sdk import Client

app = typer.Typer(help="Devices on the network.", no_args_is_help=True)

STATUS_STYLE = {
    DeviceStatus.UP: "green",
    DeviceStatus.DOWN: "red",
    DeviceStatus.PAUSED: "yellow",
    DeviceStatus.BLOCKED: "magenta",
    DeviceStatus.UNSUPPORTED: "dim",
    DeviceStatus.INACTIVE: "dim",
    DeviceStatus.TERMINATED: "dim",
}


def hardware_summary(d: DeviceView) -> str:
    hw = d.hardware
    if hw.gpus:
        name = hw.gpus[0].name.replace("NVIDIA ", "").replace("GeForce ", "")
        return f"{len(hw.gpus)}x {name} {hw.gpus[0].vram_mb // 1024}G"
    if hw.apple_chip:
        return f"{hw.apple_chip} {hw.ram_mb // 1024}G"
    return f"{hw.cpu_cores} cores {hw.ram_mb // 1024}G"


def devices_table(devices: list[DeviceView]) -> Table:
    """A table that fits 80 columns (what a pipe or a CI log gets)."""
    table = plain_table(
        "device", "name", "loc", "status", "ready", "model", "hardware", "uptime",
        overflow="ellipsis",
    )  # fmt: skip
    for d in devices:
        style = STATUS_STYLE.get(d.status, "")
        table.add_row(
            d.id[:8],
            d.name or "-",
            d.location or "-",
            f"[{style}]{d.status.value}[/{style}]",
            READINESS_SHORT.get(d.readiness, d.readiness.value),
            d.model or "-",
            hardware_summary(d),
            fmt_duration(d.uptime_s),
        )
    return table


READINESS_SHORT = {
    Readiness.PENDING: "pending",
    Readiness.CLUSTER_READY: "ready",
    Readiness.HIRED: "hired",
    Readiness.NOT_REWARD_READY: "no-rwd",
}


@app.command("list")
def list_devices(
    server: ServerOpt = DEFAULT_SERVER,
    status: Annotated[DeviceStatus | None, typer.Option(help="only this status")] = None,
    readiness: Annotated[Readiness | None, typer.Option()] = None,
    kind: Annotated[DeviceKind | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option(help="catalog key, e.g. h100-sxm-80gb")] = None,
    location: Annotated[str | None, typer.Option(help="ISO country code")] = None,
    owner: Annotated[str | None, typer.Option(help="owner public key")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List devices, newest registrations last."""
    with reported_errors(as_json), Client(server) as client:
        page = client.list_devices(
            status=status,
            readiness=readiness,
            kind=kind,
            model=model,
            location=location,
            owner=owner,
            limit=limit,
            offset=offset,
        )
    if as_json:
        print_json(page)
        return
    console.print(devices_table(page.items))
    console.print(f"{len(page.items)} of {page.total} devices")


@app.command("show")
def show_device(
    device_id: str, server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False
) -> None:
    """Show one device: hardware, status, uptime by hour and recent events."""
    with reported_errors(as_json), Client(server) as client:
        d = client.get_device(device_id)
    if as_json:
        print_json(d)
        return
    console.print(devices_table([d]))
    hw = d.hardware
    seen = f"{time.time() - d.last_seen_at:.0f}s ago" if d.last_seen_at else "never"
    console.print(
        f"[bold]{d.id}[/bold]  owner {d.owner}  last heartbeat {seen}\n"
        f"kind {d.kind.value}, {d.processors} processor(s), model {d.model or 'unsupported'}\n"
        f"CPU {hw.cpu_model} ({hw.cpu_cores} cores), RAM {hw.ram_mb // 1024} GiB, "
        f"disk {hw.disk_free_gb:.0f}/{hw.disk_total_gb:.0f} GB free, {hw.os} {hw.arch}"
    )
    proven = (
        f"proven {time.strftime('%Y-%m-%d %H:%M', time.gmtime(d.proof_passed_at))} UTC at "
        f"{d.measured_tflops:.3f} TFLOPS"
        if d.proof_passed_at and d.measured_tflops
        else "not proven yet"
    )
    tier = f"connectivity tier {d.tier}" if d.tier is not None else "connectivity not measured"
    console.print(f"{proven}; {tier} (idlegrid devices proofs {d.id[:8]}…)")
    sb = d.sandbox
    if sb.backend == "none":
        console.print(f"sandbox: none ({sb.reason or 'unsandboxed'}): rented only to its owner")
    else:
        console.print(f"sandbox: {sb.backend}, enforces {', '.join(sb.enforces)}")
    for g in hw.gpus:
        console.print(
            f"GPU {g.index}: {g.name}, {g.vram_mb} MiB, driver {hw.gpu_driver}, "
            f"CUDA {hw.cuda_version}"
        )
    if d.uptime_hours:
        console.print("uptime by hour (UTC):")
        for h in d.uptime_hours[-12:]:
            stamp = time.strftime("%Y-%m-%d %H:00", time.gmtime(h.hour))
            console.print(f"  {stamp}  {fmt_duration(h.seconds)}")
    if d.events:
        console.print("recent events:")
        for e in d.events[:10]:
            stamp = time.strftime("%H:%M:%S", time.gmtime(e.at))
            detail = ", ".join(f"{k}={v}" for k, v in e.detail.items())
            console.print(f"  {stamp}  {e.kind}  {detail}")


@app.command("proofs")
def proofs(device_id: str, server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False) -> None:
    """A device's proofs of compute, newest first."""
    with reported_errors(as_json), Client(server) as client:
        history = client.proofs(device_id)
    if as_json:
        print_json(history)
        return
    table = plain_table(
        *("when (UTC)", "result", "reason", "n", "rounds", "TFLOPS", "claimed", "prover")
    )
    for p in history.items:
        style = {"verified": "green", "failed": "red"}.get(p.status.value, "")
        table.add_row(
            time.strftime("%m-%d %H:%M:%S", time.gmtime(p.created_at)),
            f"[{style}]{p.status.value}[/{style}]" if style else p.status.value,
            p.reason or "-",
            str(p.n),
            str(p.rounds),
            f"{p.measured_tflops:.3f}" if p.measured_tflops is not None else "-",
            f"{p.claimed_tflops:.3f}",
            p.prover or "-",
        )
    console.print(table)
    if not history.items:
        console.print("no proofs yet")


def _owner_action(
    action: str, device_id: str, keypair_file: Path, server: str, as_json: bool
) -> None:
    call_and_show(
        signed_client(server, keypair_file),
        as_json,
        lambda c: getattr(c, f"{action}_device")(device_id),
        lambda v: console.print(f"{device_id}: {v.status.value}"),
    )


OwnerKeyOpt = Annotated[
    Path, typer.Option("--keypair", help="the owner's keypair file (Solana JSON format)")
]


@app.command("pause")
def pause(
    device_id: str,
    keypair: OwnerKeyOpt,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Pause a device you own: it stays registered but is not hired."""
    _owner_action("pause", device_id, keypair, server, as_json)


@app.command("resume")
def resume(
    device_id: str,
    keypair: OwnerKeyOpt,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Resume a paused device you own."""
    _owner_action("resume", device_id, keypair, server, as_json)


@app.command("terminate")
def terminate(
    device_id: str,
    keypair: OwnerKeyOpt,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Terminate a device you own, for good."""
    _owner_action("terminate", device_id, keypair, server, as_json)
