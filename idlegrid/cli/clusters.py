"""``idlegrid clusters`` (deploy, list, show, extend, terminate), ``idlegrid jobs
submit`` (through Ray's Jobs API, with the cluster's token) and ``idlegrid
api-keys create``. A buyer is named by ``--api-key`` (or IDLEGRID_API_KEY) or
by a wallet ``--keypair`` that signs each request."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from idlegrid.cli.common import (
    DEFAULT_SERVER,
    JsonOpt,
    ServerOpt,
    call_and_show,
    console,
    err_console,
    fmt_duration,
    fmt_time,
    plain_table,
    print_json,
    reported_errors,
    signed_client,
)
from idlegrid.core.clusters import ACTIVE
from idlegrid.errors import IdlegridError
from idlegrid.protocol import ApiKeyList, ClusterView, DeployRequest, ExtendRequest
from idlegrid.sdk import Client

app = typer.Typer(
    help="Rent Ray clusters: deploy, inspect, extend, terminate.", no_args_is_help=True
)
jobs_app = typer.Typer(
    help="Run work on your clusters through Ray's Jobs API.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys for your wallet.", no_args_is_help=True)

KeyOpt = Annotated[
    Path | None, typer.Option("--keypair", help="your wallet's keypair (Solana JSON)")
]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", envvar="IDLEGRID_API_KEY", help="an API key")
]
Unit = Literal["hours", "days", "weeks"]
DONE = ("running", "failed", "terminated", "completed", "destroyed")


def buyer_client(server: str, keypair: Path | None, api_key: str | None) -> Client:
    if api_key:
        return Client(server, api_key=api_key)
    if keypair is None:
        err_console.print("[red]error[/red]: give --api-key (or IDLEGRID_API_KEY) or --keypair")
        raise typer.Exit(2)
    return signed_client(server, keypair)


@keys_app.command("create")
def create_key(
    keypair: Annotated[Path, typer.Option("--keypair", help="your wallet's keypair")],
    name: Annotated[str, typer.Option(help="a label for the key")] = "default",
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; it is shown once (the server keeps only its hash)."""
    client = buyer_client(server, keypair, None)
    with reported_errors(as_json), client:
        view = client.create_api_key(name)
    if as_json:
        print_json(view)
    else:
        console.print(f"API key {view.id} ({view.name}): [bold]{view.key}[/bold]")
        console.print("store it now: it cannot be shown again")


@keys_app.command("list")
def list_keys(
    keypair: Annotated[Path, typer.Option("--keypair", help="your wallet's keypair")],
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Your API keys (ids and names; the keys themselves are never shown again)."""

    def show(keys: ApiKeyList) -> None:
        table = plain_table("id", "name", "created", "revoked")
        for k in keys.items:
            revoked = fmt_time(k.revoked_at) if k.revoked_at is not None else "-"
            table.add_row(k.id, k.name, fmt_time(k.created_at), revoked)
        console.print(table)

    call_and_show(signed_client(server, keypair), as_json, lambda c: c.api_keys(), show)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="the key's id (idlegrid api-keys list)")],
    keypair: Annotated[Path, typer.Option("--keypair", help="your wallet's keypair")],
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key: every request with it is refused from now on."""
    call_and_show(
        signed_client(server, keypair),
        as_json,
        lambda c: c.revoke_api_key(key_id),
        lambda k: console.print(f"API key {k.id} ({k.name}) revoked"),
    )


@app.command("deploy")
def deploy(
    hardware: Annotated[str, typer.Option(help='catalog model key, or "cpu"')],
    name: Annotated[str, typer.Option(help="a name for the cluster")] = "cluster",
    quantity: Annotated[int, typer.Option(min=1, help="devices")] = 1,
    product: Annotated[
        Literal["ray", "mega-ray"], typer.Option(help="mega-ray takes every match")
    ] = "ray",
    type_: Annotated[
        Literal["general", "inference", "train"], typer.Option("--type", help="cluster type")
    ] = "general",
    location: Annotated[list[str] | None, typer.Option(help="ISO country; repeat")] = None,
    min_tier: Annotated[int, typer.Option(min=0, max=4, help="connectivity tier")] = 0,
    supplier: Annotated[list[str] | None, typer.Option(help="supplier key; repeat")] = None,
    duration: Annotated[int, typer.Option(min=1, help="how long, in --unit")] = 1,
    unit: Annotated[Unit, typer.Option(help="hours, days or weeks")] = "hours",
    currency: Annotated[Literal["IO", "USDC"], typer.Option(help="pay in")] = "IO",
    start: Annotated[
        Literal["now", "flexible"], typer.Option(help="flexible waits for a cheaper moment")
    ] = "now",
    max_price_usd: Annotated[
        str | None, typer.Option(help="auction mode: the most you pay per device-hour, USD")
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait until running")] = True,
    timeout_s: Annotated[float, typer.Option(help="give up waiting after")] = 300.0,
    keypair: KeyOpt = None,
    api_key: ApiKeyOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Quote, pay into escrow, and deploy a Ray cluster; shows progress until running."""
    client = buyer_client(server, keypair, api_key)
    with reported_errors(as_json), client:
        req = DeployRequest(
            name=name,
            type=type_,
            product=product,
            hardware=hardware,
            quantity=quantity,
            locations=[loc.upper() for loc in location or []],
            min_tier=min_tier,
            suppliers=supplier or [],
            duration=duration,
            duration_unit=unit,
            currency=currency,
            start=start,
            max_price_usd=max_price_usd,
        )
        quote = client.quote(req)
        if not as_json:
            console.print(
                f"quote {quote.id[:8]}: {quote.devices} × {hardware} for {quote.hours} h at "
                f"{quote.price_per_device_hour} {quote.currency}/device-hour = {quote.total} "
                f"{quote.currency} (fee {quote.buyer_fee} included)"
            )
            for item in quote.breakdown:
                console.print(f"  {item.name:<14} {item.per_device_hour:>16} /h  {item.detail}")
        view = client.deploy(quote.id)
        if wait:
            view = _wait(client, view, timeout_s, quiet=as_json)
    if as_json:
        print_json(view)
    else:
        _show(view)
    if view.status != "running" and wait:
        raise typer.Exit(1)


def _wait(client: Client, view: ClusterView, timeout_s: float, quiet: bool) -> ClusterView:
    start = time.monotonic()
    deadline = start + timeout_s
    with console.status("deploying…", spinner="dots") as status:
        while view.status not in DONE and time.monotonic() < deadline:
            up = sum(1 for n in view.nodes if n.left_at is None and n.state == "up")
            total = sum(1 for n in view.nodes if n.left_at is None)
            if not quiet:
                status.update(
                    f"{view.status}: {up}/{total} Ray nodes up ({time.monotonic() - start:.0f}s)"
                )
            time.sleep(0.25)
            view = client.get_cluster(view.id)
    if not quiet and view.status == "running":
        console.print(f"running after {time.monotonic() - start:.1f}s")
    return view


def _show(v: ClusterView) -> None:
    console.print(f"cluster [bold]{v.id}[/bold] ({v.name}): [bold]{v.status}[/bold]")
    if v.reason:
        console.print(f"  reason: {v.reason}")
    console.print(
        f"  {v.quantity} × {v.hardware}, {v.hours} h at {v.price_per_device_hour} "
        f"{v.currency}/device-hour; paid {v.paid}, charged {v.charged}, refunded {v.refunded}"
    )
    if v.remaining_s is not None:
        console.print(f"  remaining {fmt_duration(v.remaining_s)}")
    if v.ray_address:
        console.print(f"  ray address    {v.ray_address}")
        console.print(f"  ray client     {v.ray_client_address}")
        console.print(f"  dashboard/jobs {v.dashboard_url}")
    if v.ray_token:
        console.print(f"  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN={v.ray_token}")
    table = plain_table("device", "role", "gen", "state", "model", "loc", "paid", "left")
    for n in v.nodes:
        table.add_row(
            n.device_id[:12],
            n.role,
            str(n.generation),
            n.state,
            n.model or "-",
            n.location or "-",
            n.paid,
            n.left_reason or "",
        )
    console.print(table)


@app.command("list")
def list_clusters(
    active: Annotated[bool, typer.Option(help="only active clusters")] = False,
    keypair: KeyOpt = None,
    api_key: ApiKeyOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Your clusters, newest first."""
    client = buyer_client(server, keypair, api_key)
    with reported_errors(as_json), client:
        views = client.list_clusters(active=active)
    if as_json:
        print_json(views)
        return
    table = plain_table("id", "name", "status", "devices", "hardware", "remaining", "charged")
    for v in views.items:
        table.add_row(
            v.id,
            v.name,
            v.status,
            str(v.quantity),
            v.hardware,
            fmt_duration(v.remaining_s) if v.remaining_s is not None else "-",
            f"{v.charged} {v.currency}",
        )
    console.print(table)


@app.command("show")
def show(
    cluster_id: str,
    keypair: KeyOpt = None,
    api_key: ApiKeyOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """One cluster: status, bill, nodes, Ray address and token."""
    call_and_show(
        buyer_client(server, keypair, api_key), as_json, lambda c: c.get_cluster(cluster_id), _show
    )


@app.command("extend")
def extend(
    cluster_id: str,
    duration: Annotated[int, typer.Option(min=1)] = 1,
    unit: Annotated[Unit, typer.Option()] = "hours",
    keypair: KeyOpt = None,
    api_key: ApiKeyOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Pay for more time at the cluster's price."""
    req = ExtendRequest(duration=duration, duration_unit=unit)
    call_and_show(
        buyer_client(server, keypair, api_key),
        as_json,
        lambda c: c.extend_cluster(cluster_id, req),
        _show,
    )


@app.command("terminate")
def terminate(
    cluster_id: str,
    keypair: KeyOpt = None,
    api_key: ApiKeyOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Stop now: providers are paid to now and the unused time is refunded."""
    call_and_show(
        buyer_client(server, keypair, api_key),
        as_json,
        lambda c: c.terminate_cluster(cluster_id),
        _show,
    )


@jobs_app.command(
    "submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def submit(
    ctx: typer.Context,
    cluster_id: str,
    working_dir: Annotated[Path, typer.Option(help="uploaded to the cluster")] = Path("."),
    wait: Annotated[bool, typer.Option(help="follow the job until it ends")] = True,
    timeout_s: Annotated[float, typer.Option(help="stop following after")] = 3600.0,
    keypair: KeyOpt = None,
    api_key: ApiKeyOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Submit `-- ENTRYPOINT…` as a Ray job; exits 1 unless it succeeds."""
    entrypoint = " ".join(ctx.args)
    if not entrypoint:
        err_console.print("[red]error[/red]: give the command after --, e.g. -- python job.py")
        raise typer.Exit(2)
    client = buyer_client(server, keypair, api_key)
    with reported_errors(as_json), client:
        view = client.get_cluster(cluster_id)
    if view.status != "running" or not view.dashboard_url or not view.ray_token:
        body = {"code": "cluster_not_running", "message": f"the cluster is {view.status}"}
        print_json(body) if as_json else err_console.print(f"[red]error[/red]: {body['message']}")
        raise typer.Exit(1)
    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        jobs = JobSubmissionClient(
            view.dashboard_url, headers={"Authorization": f"Bearer {view.ray_token}"}
        )
        job_id = jobs.submit_job(
            entrypoint=entrypoint, runtime_env={"working_dir": str(working_dir)}
        )
    except (RuntimeError, ConnectionError, IdlegridError) as exc:
        err_console.print(f"[red]error[/red]: the cluster refused the job: {exc}")
        raise typer.Exit(1) from None
    if not as_json:
        console.print(f"job {job_id} submitted to {view.dashboard_url}")
    if not wait:
        if as_json:
            print_json({"job_id": job_id, "status": "PENDING"})
        return
    status, shown = jobs.get_job_status(job_id), 0
    deadline = time.monotonic() + timeout_s
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
        status = jobs.get_job_status(job_id)
        if not as_json:
            logs = jobs.get_job_logs(job_id)
            typer.echo(logs[shown:], nl=False)
            shown = len(logs)
    logs = jobs.get_job_logs(job_id)
    if as_json:
        print_json({"job_id": job_id, "status": status.value, "logs": logs})
    else:
        typer.echo(logs[shown:], nl=False)
        console.print(f"job {job_id}: [bold]{status.value}[/bold]")
    if status != JobStatus.SUCCEEDED:
        raise typer.Exit(1)


def prices(
    model: Annotated[str | None, typer.Option(help="one model's history instead")] = None,
    location: Annotated[str, typer.Option(help='with --model: a country, or "*"')] = "*",
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """The price of one device-hour now, per model and region (or a model's history)."""
    with reported_errors(as_json), Client(server) as client:
        view = client.price_history(model, location) if model else client.prices()
    if as_json:
        print_json(view)
        return
    table = plain_table("model", "region", "USD/h", "IO/h", "utilisation", "idle", "hired")
    for p in view.items:
        table.add_row(
            p.model,
            p.location,
            p.usd_per_device_hour,
            p.io_per_device_hour,
            f"{p.utilisation:.0%}",
            str(p.idle),
            str(p.hired),
        )
    console.print(table)


def floor(
    device: Annotated[str, typer.Argument(help="your device's id")],
    usd: Annotated[str, typer.Argument(help="the least you accept per device-hour, USD")],
    keypair: Annotated[Path, typer.Option("--keypair", help="the owner's keypair")],
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
) -> None:
    """Set a device's floor price: it is never hired for less (0 removes it)."""
    call_and_show(
        signed_client(server, keypair),
        as_json,
        lambda c: c.set_floor(device, usd),
        lambda v: console.print(f"floor of {device}: {v.usd} USD/h"),
    )


@app.command("connect")
def connect(
    cluster_id: str,
    keypair: KeyOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    as_json: JsonOpt = False,
    refresh_s: Annotated[float, typer.Option(help="how often to ask for peers' endpoints")] = 2.0,
    timeout_s: Annotated[float, typer.Option(help="give up if the head does not answer")] = 90.0,
) -> None:
    """Join the cluster's overlay as a peer of your own, and stay until interrupted
    or until the cluster ends.

    Makes a WireGuard interface here (root and wireguard-go needed) with a fresh key
    pair; the cluster's dashboard, Jobs API and Ray client are then at the head's
    overlay address, printed once it answers. Hellos are signed by your wallet
    (``--keypair``), the cluster's owner.
    """
    from idlegrid.cli.connect import Joined  # makes interfaces: only here
    from idlegrid.worker.wireguard import WireGuardError

    if keypair is None:
        err_console.print("[red]error[/red]: connect signs with your wallet: give --keypair")
        raise typer.Exit(2)
    wallet = signed_client(server, keypair).keypair
    assert wallet is not None
    try:
        with reported_errors(as_json), Joined(server, wallet, cluster_id, refresh_s) as peer:
            view = peer.wait(timeout_s)
            assert peer.place is not None
            _connected(peer.place.address, view, as_json)
            while view.status in {s.value for s in ACTIVE}:
                time.sleep(refresh_s)
                view = peer.client.get_cluster(cluster_id)
    except (WireGuardError, TimeoutError) as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


def _connected(address: str, view: ClusterView, as_json: bool) -> None:
    found = {
        "cluster_id": view.id,
        "address": address,
        "dashboard_url": view.dashboard_url,
        "ray_address": view.ray_address,
        "ray_client_address": view.ray_client_address,
    }
    if as_json:
        print(json.dumps(found), flush=True)
    else:
        console.print(f"connected to {view.id} as {address}: dashboard {view.dashboard_url}")
