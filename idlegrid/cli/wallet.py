"""``idlegrid wallet`` (balances, deposits, withdrawals, history) and
``idlegrid ledger audit``."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, Literal

import typer

from idlegrid.cli.common import (
    DEFAULT_SERVER,
    JsonOpt,
    ServerOpt,
    console,
    err_console,
    local_input,
    plain_table,
    print_json,
    reported_errors,
    signed_client,
)
from idlegrid.protocol import FaucetRequest, WithdrawRequest
from idlegrid.sdk import Client

app = typer.Typer(help="Your balances, deposits and withdrawals.", no_args_is_help=True)
ledger_app = typer.Typer(help="The network's books.", no_args_is_help=True)

KeyOpt = Annotated[
    Path, typer.Option("--keypair", help="your wallet's keypair (Solana JSON format)")
]
AssetArg = Annotated[Literal["IO", "USDC"], typer.Argument(help="IO or USDC")]


def _client(server: str, keypair: Path) -> tuple[Client, str]:
    client = signed_client(server, keypair)
    assert client.keypair is not None
    return client, str(client.keypair.pubkey())


@app.command("new")
def new(keypair: KeyOpt, server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False) -> None:
    """Create a wallet keypair file (mode 0600); an existing one is kept. It needs no
    server: ``--server`` is accepted, and ignored, as its sibling commands take it."""
    del server
    from idlegrid.identity import load_or_create_keypair

    with local_input():
        kp, created = load_or_create_keypair(keypair.expanduser())
    if as_json:
        print_json({"pubkey": str(kp.pubkey()), "created": created, "path": str(keypair)})
    else:
        console.print(f"{'created' if created else 'kept existing'} {keypair}: {kp.pubkey()}")


@app.command("balance")
def balance(keypair: KeyOpt, server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False) -> None:
    """Balances, what is available, and your deposit addresses."""
    client, me = _client(server, keypair)
    with reported_errors(as_json), client:
        view = client.wallet(me)
    if as_json:
        print_json(view)
        return
    table = plain_table("asset", "balance", "available", "deposit address")
    for b in view.balances:
        table.add_row(b.asset, b.balance, b.available, b.deposit_address)
    console.print(f"wallet {me}")
    console.print(table)


@app.command("deposit")
def deposit(keypair: KeyOpt, server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False) -> None:
    """Credit tokens sent to your deposit addresses."""
    client, me = _client(server, keypair)
    with reported_errors(as_json), client:
        view = client.sweep_deposits(me)
    if as_json:
        print_json(view)
    elif view.credited:
        for asset, amount in view.credited.items():
            console.print(f"credited {amount} {asset}")
    else:
        console.print("nothing new at your deposit addresses")


@app.command("withdraw")
def withdraw(
    asset: AssetArg,
    amount: Annotated[str, typer.Argument(help='whole tokens, e.g. "12.5"')],
    keypair: KeyOpt,
    request_id: Annotated[
        str | None, typer.Option("--id", help="reuse to retry safely; default: a new id")
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Pay tokens out to your own wallet on chain."""
    client, me = _client(server, keypair)
    req = WithdrawRequest(id=request_id or uuid.uuid4().hex, asset=asset, amount=amount)
    with reported_errors(as_json), client:
        view = client.withdraw(me, req)
    if as_json:
        print_json(view)
    else:
        note = " (already recorded: not paid twice)" if view.replayed else ""
        if view.chain == "done":
            console.print(f"withdrew {view.amount} {view.asset}{note}; id {req.id}")
        elif view.chain == "pending":
            console.print(
                f"withdrawal of {view.amount} {view.asset} recorded{note}; the payout is "
                f"pending on chain (retry with --id {req.id} to see it finish)"
            )
        else:
            console.print(
                f"[red]the chain refused the payout of {view.amount} {view.asset}; "
                "it is back in your balance[/red]"
            )
            raise typer.Exit(1)


@app.command("faucet")
def faucet(
    asset: AssetArg,
    amount: Annotated[str, typer.Argument(help="whole tokens")],
    keypair: KeyOpt,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Development networks only: tokens to try things with."""
    client, me = _client(server, keypair)
    with reported_errors(as_json), client:
        view = client.faucet(me, FaucetRequest(asset=asset, amount=amount))
    if as_json:
        print_json(view)
    else:
        console.print(", ".join(f"{b.balance} {b.asset}" for b in view.balances))


@app.command("history")
def history(keypair: KeyOpt, server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False) -> None:
    """Your transfers, newest first."""
    client, me = _client(server, keypair)
    with reported_errors(as_json), client:
        view = client.wallet_history(me)
    if as_json:
        print_json(view)
        return
    table = plain_table("when (UTC)", "what", "amount", "asset", "seq")
    for t in view.items:
        sign = "+" if t.credit.startswith(f"user:{me}:") else "-"
        table.add_row(
            time.strftime("%m-%d %H:%M:%S", time.gmtime(t.at)),
            t.code,
            sign + t.amount,
            t.asset,
            str(t.seq),
        )
    console.print(table)


@ledger_app.command("audit")
def audit(server: ServerOpt = DEFAULT_SERVER, as_json: JsonOpt = False) -> None:
    """Check the books: balanced, hash chain intact, book = chain, supply within the cap.
    Exits 1 and names the first discrepancy."""
    with reported_errors(as_json), Client(server) as client:
        report = client.ledger_audit()
    if as_json:
        print_json(report)
    else:
        for c in report.checks:
            mark = "[green]ok[/green]  " if c.ok else "[red]FAIL[/red]"
            console.print(f"{mark} {c.name}: {c.detail}")
    if not report.ok:
        first = next(c for c in report.checks if not c.ok)
        err_console.print(f"[red]discrepancy[/red]: {first.name} ({first.detail})")
        raise typer.Exit(1)
