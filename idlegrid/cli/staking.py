"""``idlegrid stake / unstake / costake``, ``idlegrid blocks list / show / verify``,
``idlegrid rewards DEVICE``, ``idlegrid claim`` and ``idlegrid earnings WALLET``.
Staking and claiming are signed by the wallet's keypair; blocks and rewards are
public, and ``blocks verify`` recomputes a block on this machine from its
published inputs."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from idlegrid.cli.common import (
    DEFAULT_SERVER,
    JsonOpt,
    ServerOpt,
    call_and_show,
    console,
    err_console,
    local_input,
    plain_table,
    print_json,
    reported_errors,
    signed_client,
)
from idlegrid.core import block_publication, rewards
from idlegrid.protocol import BlockList, BlockView, RewardList, SeasonList, SeasonView, StakeView
from idlegrid.sdk import Client

blocks_app = typer.Typer(help="Hourly reward blocks: list, show, verify.", no_args_is_help=True)

KeyOpt = Annotated[Path, typer.Option("--keypair", help="the staker's keypair (Solana JSON)")]
DeviceArg = Annotated[str, typer.Argument(help="the device id")]
AmountArg = Annotated[str, typer.Argument(help='whole IO, e.g. "200"')]


def _show_stake(v: StakeView) -> None:
    ok = "[green]meets[/green]" if v.meets_minimum else "[red]below[/red]"
    console.print(f"device {v.device_id}: effective {v.effective} IO, {ok} the minimum {v.minimum}")
    console.print(
        f"  owner {v.owner}: active {v.active} IO; co-stake share {v.costake_share_bps} bps"
    )
    for amount, unlocks in v.cooling:
        when = datetime.fromtimestamp(unlocks, UTC).isoformat(timespec="minutes")
        console.print(f"  cooling {amount} IO until {when}")
    for c in v.costakes:
        state = "counting" if c.counts else "cooling"
        console.print(f"  co-stake {c.staker}: {c.amount} IO for {c.share_bps} bps ({state})")
    if float(v.slashed_pending):
        console.print(f"  slashed, awaiting appeal: {v.slashed_pending} IO")


def stake(
    device: DeviceArg,
    amount: AmountArg,
    keypair: KeyOpt,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Stake IO behind your device (at least its minimum: 200 × multiplier × GPUs)."""
    call_and_show(
        signed_client(server, keypair), as_json, lambda c: c.stake(device, amount), _show_stake
    )


def unstake(
    device: DeviceArg,
    amount: AmountArg,
    keypair: KeyOpt,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Start a 14-day cooldown on some of your stake (not while the device is hired)."""
    call_and_show(
        signed_client(server, keypair), as_json, lambda c: c.unstake(device, amount), _show_stake
    )


def costake(
    device: DeviceArg,
    amount: Annotated[str | None, typer.Argument(help="IO to co-stake")] = None,
    keypair: KeyOpt = Path("~/.idlegrid/wallet.json"),
    exit_: Annotated[bool, typer.Option("--exit", help="leave: 7 days' notice, then 14")] = False,
    withdraw: Annotated[bool, typer.Option(help="take out stake that finished cooling")] = False,
    share_bps: Annotated[
        int | None, typer.Option(help="(owner) the share offered to co-stakers, in bps")
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Co-stake behind someone's device (up to half its stake) for the owner's share."""
    client = signed_client(server, keypair)
    with reported_errors(as_json), client:
        if share_bps is not None:
            view = client.set_costake_share(device, share_bps)
        elif exit_:
            view = client.costake_exit(device)
        elif withdraw:
            view = client.withdraw_stake(device)
        elif amount is not None:
            view = client.costake(device, amount)
        else:
            err_console.print("[red]error[/red]: give an AMOUNT, --exit, --withdraw or --share-bps")
            raise typer.Exit(2)
    print_json(view) if as_json else _show_stake(view)


def rewards_cmd(
    device: DeviceArg, server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False
) -> None:
    """What a device earned, block by block, and why it was left out when it was."""
    call_and_show(Client(server), as_json, lambda c: c.device_rewards(device), _show_rewards)


def _show_rewards(view: RewardList) -> None:
    table = plain_table("block", "IO", "score", "left out because")
    for r in view.items:
        table.add_row(str(r.block), r.units, r.score, ", ".join(r.excluded_because))
    console.print(table)
    console.print(f"total {view.total} IO over {len(view.items)} blocks")


def claim(keypair: KeyOpt, server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False) -> None:
    """Claim the block rewards credited to your wallet since your last claim."""
    call_and_show(
        signed_client(server, keypair),
        as_json,
        lambda c: c.claim_rewards(),
        lambda v: console.print(
            f"claimed [bold]{v.amount} IO[/bold] through block {v.through} ({v.transfer_id})"
        ),
    )


def earnings(
    wallet: Annotated[str, typer.Argument(help="an owner's or co-staker's wallet")],
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """A wallet's block rewards: earned, claimed through which block, claimable now."""
    call_and_show(
        Client(server),
        as_json,
        lambda c: c.reward_balance(wallet),
        lambda v: console.print(
            f"{v.wallet}: earned {v.earned} IO; claimable now {v.unclaimed} IO "
            f"(blocks {v.claimed_through + 1}–{v.credited_through})"
        ),
    )


@blocks_app.command("list")
def list_blocks(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 24,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """The latest blocks: status, emission, paid, nominated and left out."""
    call_and_show(Client(server), as_json, lambda c: c.list_blocks(limit), _show_blocks)


def _show_blocks(view: BlockList) -> None:
    table = plain_table(
        "block", "window (UTC)", "status", "emission", "paid", "nominated", "left out"
    )
    for b in view.items:
        start = datetime.fromtimestamp(b.starts_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            str(b.number),
            f"{start} +{b.length_s}s",
            b.status,
            b.emission,
            b.paid,
            str(b.nominated),
            str(b.excluded),
        )
    console.print(table)


@blocks_app.command("show")
def show_block(number: int, server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False) -> None:
    """One block: its hashes, its pools and every device's reward or reasons."""
    call_and_show(Client(server), as_json, lambda c: c.get_block(number), _show_block)


def _show_block(view: BlockView) -> None:
    console.print(f"block {view.number}: [bold]{view.status}[/bold], emission {view.emission} IO")
    console.print(f"  inputs  sha256 {view.inputs_hash}\n  outputs sha256 {view.outputs_hash}")
    if view.inputs is None or view.outputs is None:
        return
    for pool in cast(list[dict[str, Any]], view.outputs["pools"]):
        console.print(f"  pool {pool}")
    paid, excluded = block_publication.published_rows(view.inputs, view.outputs)
    for r in paid[:50]:
        console.print(f"  {r['device_id']}: {r['units']} units")
    for x in excluded[:50]:
        console.print(f"  {x['device_id']}: left out ({', '.join(x['reasons'])})")
    if len(paid) > 50 or len(excluded) > 50:
        console.print(
            f"  ({len(paid)} paid, {len(excluded)} left out in all: --json for every one)"
        )


@blocks_app.command("verify")
def verify_block(
    number: int,
    inputs: Annotated[
        Path | None, typer.Option(help="verify this copy of the inputs (JSON) instead")
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Recompute the block here from its published inputs; exit 1 if it differs.

    Downloads both published documents as the bytes that were hashed: the outputs'
    SHA-256 is the block's outputs hash, the outputs name the inputs' SHA-256, and
    the block recomputed from the inputs must hash to the same outputs."""
    with reported_errors(as_json), Client(server) as client:
        inputs_bytes = client.block_document(number, "inputs")
        outputs_bytes = client.block_document(number, "outputs")
    outputs_hash = hashlib.sha256(outputs_bytes).hexdigest()
    copy: dict[str, Any] | None = None
    if inputs is not None:
        with local_input():
            copy = json.loads(inputs.read_text())
    ok = rewards.verify_published(inputs_bytes, outputs_bytes, copy)
    if as_json:
        print_json({"block": number, "ok": ok, "outputs_hash": outputs_hash})
    elif ok:
        console.print(
            f"block {number}: [green]verified[/green]: recomputed from its inputs, "
            f"outputs sha256 {outputs_hash}"
        )
    else:
        console.print(f"block {number}: [red]does not verify[/red] from these inputs")
    if not ok:
        raise typer.Exit(1)


seasons_app = typer.Typer(help="Reward seasons: points for verified uptime, IO at the end.")


@seasons_app.command("list")
def list_seasons(server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False) -> None:
    """Seasons, newest first."""
    call_and_show(Client(server), as_json, lambda c: c.seasons(), _show_seasons)


def _show_seasons(view: SeasonList) -> None:
    for s in view.items:
        console.print(
            f"{s.id} {s.name}: blocks {s.starts_block}-{s.ends_block - 1}, {s.status}; "
            f"GPU {s.gpu_points} / CPU {s.cpu_points} points at {s.points_per_io}:1 IO"
        )


@seasons_app.command("show")
def show_season(
    season_id: str, server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False
) -> None:
    """A season's rules, standings and (when finished) its results and their hash."""
    call_and_show(Client(server), as_json, lambda c: c.get_season(season_id), _show_season)


def _show_season(s: SeasonView) -> None:
    console.print(f"{s.name}: {s.status}, blocks {s.starts_block}-{s.ends_block - 1}")
    if s.results_hash:
        console.print(f"  results sha256 {s.results_hash}")
    for row in s.standings[:50]:
        console.print(f"  {row.device_id} ({row.kind}): {row.points} points")
