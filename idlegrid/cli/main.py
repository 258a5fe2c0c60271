"""The ``idlegrid`` command: server, worker, devices, and the local network."""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from idlegrid.cli import clusters, devices, relay, staking, token, wallet
from idlegrid.cli.catalog import catalog
from idlegrid.cli.common import (
    DEFAULT_SERVER,
    ServerOpt,
    console,
    err_console,
    local_input,
    reported_errors,
)
from idlegrid.version import __version__

app = typer.Typer(
    help="idlegrid: rent out idle GPUs and CPUs as Ray clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
worker_app = typer.Typer(help="The worker agent that lends this machine.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")
app.add_typer(devices.app, name="devices")
app.add_typer(token.app, name="token")
app.add_typer(wallet.app, name="wallet")
app.add_typer(wallet.ledger_app, name="ledger")
app.add_typer(clusters.app, name="clusters")
app.add_typer(clusters.jobs_app, name="jobs")
app.add_typer(clusters.keys_app, name="api-keys")
app.add_typer(staking.blocks_app, name="blocks")
app.add_typer(staking.seasons_app, name="seasons")
app.command()(staking.stake)
app.command()(staking.unstake)
app.command()(staking.costake)
app.command("rewards")(staking.rewards_cmd)
app.command()(staking.claim)
app.command()(staking.earnings)
app.command()(clusters.prices)
devices.app.command("floor")(clusters.floor)
app.command()(catalog)
app.command()(relay.relay)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # a line per heartbeat is noise
        logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the control plane (settings from IDLEGRID_* variables; see README)."""
    from pydantic import ValidationError

    from idlegrid.server.app import create_app
    from idlegrid.server.serve import serve
    from idlegrid.server.settings import ServerSettings

    _logging(verbose)
    try:
        settings = ServerSettings()
        settings = settings.model_copy(
            update={"host": host or settings.host, "port": port or settings.port}
        )
    except ValidationError as exc:
        err_console.print(f"[red]invalid settings[/red]: {exc}")
        raise typer.Exit(2) from None
    for warning in settings.startup_warnings():
        err_console.print(f"[yellow]warning[/yellow]: {warning}")
    serve(
        create_app(settings),
        settings.host,
        settings.port,
        header_timeout_s=settings.header_timeout_s,
        trusted_proxies=settings.trusted_proxies,
    )


@worker_app.command("start")
def worker_start(
    server: ServerOpt = DEFAULT_SERVER,
    keypair: Annotated[
        Path, typer.Option(help="device keypair (Solana JSON); created if missing")
    ] = Path("~/.idlegrid/device.json"),
    location: Annotated[str | None, typer.Option(help="ISO country code, e.g. DE")] = None,
    name: Annotated[str | None, typer.Option(help="a name to show for this device")] = None,
    owner_keypair: Annotated[
        Path | None, typer.Option(help="owner keypair: file the device under this owner")
    ] = None,
    hardware_file: Annotated[
        Path | None,
        typer.Option(help="JSON hardware description that replaces detection (simulation)"),
    ] = None,
    ray_ip: Annotated[
        str | None, typer.Option(help="address other Ray nodes reach; default: detected")
    ] = None,
    ray_object_store_mb: Annotated[
        int | None, typer.Option(min=75, help="Ray object store per node; default 30% of RAM")
    ] = None,
    ray_num_cpus: Annotated[
        int | None, typer.Option(min=1, help="CPUs this device gives Ray; default all")
    ] = None,
    cpu_cores: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="cores this device lends and claims (its proofs are judged on them); "
            "default all. Agents sharing one machine each claim their share",
        ),
    ] = None,
    ray_log_dir: Annotated[Path | None, typer.Option(help="where Ray node output goes")] = None,
    ray_memory_mb: Annotated[
        int | None, typer.Option(min=256, help="memory cap of a Ray node; default 90% of RAM")
    ] = None,
    ray_peer_network: Annotated[
        str | None,
        typer.Option(help="a CIDR of this host's addresses that Ray peers use (local networks)"),
    ] = None,
    no_beats: Annotated[
        bool,
        typer.Option("--no-beats", help="heartbeat over signed HTTP only, never as UDP beats"),
    ] = False,
    no_sandbox: Annotated[
        bool,
        typer.Option(
            "--no-sandbox",
            help="run buyers' Ray nodes unsandboxed; the device is then rented only to its owner",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Detect this machine, register it and heartbeat until stopped; when hired,
    run the Ray node of the buyer's cluster."""

    from idlegrid.errors import SandboxUnavailable
    from idlegrid.identity import load_keypair, load_or_create_keypair
    from idlegrid.sdk import Client
    from idlegrid.worker.agent import Agent
    from idlegrid.worker.hardware import detect_hardware, hardware_from_file
    from idlegrid.worker.raynode import RayConfig
    from idlegrid.worker.sandbox import NoSandbox, Sandbox, default_sandbox

    _logging(verbose)
    log = logging.getLogger("idlegrid.worker")
    if location is not None:
        location = location.upper()
    with local_input():
        kp, created = load_or_create_keypair(keypair.expanduser())
        owner_kp = load_keypair(owner_keypair.expanduser()) if owner_keypair else None
        hardware = hardware_from_file(hardware_file) if hardware_file else detect_hardware()
    if cpu_cores is not None:
        physical = min(cpu_cores, hardware.cpu_physical_cores or cpu_cores)
        hardware = hardware.model_copy(
            update={"cpu_cores": min(cpu_cores, hardware.cpu_cores), "cpu_physical_cores": physical}
        )
    device_id = str(kp.pubkey())
    if ray_peer_network is not None:
        try:
            ray_peer_network = str(ipaddress.ip_network(ray_peer_network, strict=False))
        except ValueError as exc:
            err_console.print(f"[red]error[/red]: --ray-peer-network: {exc}")
            raise typer.Exit(2) from None
    sandbox: Sandbox
    if no_sandbox:
        sandbox = NoSandbox("--no-sandbox")
        log.warning(
            "--no-sandbox: buyers' code would run as this agent, so this device is rented "
            "only to clusters of its own owner"
        )
    else:
        sandbox = default_sandbox()
        try:
            sandbox.check()
        except SandboxUnavailable as exc:
            if sys.platform == "linux":
                err_console.print(f"[red]error[/red]: {exc.message}")
                for key, value in exc.details.items():
                    err_console.print(f"  {key}: {value}")
                raise typer.Exit(2) from None
            # No backend exists here (macOS, Windows): lend to the owner only.
            sandbox = NoSandbox(f"no sandbox on {sys.platform}")
            log.warning("%s; this device is rented only to its own owner", exc.message)
        else:
            info = sandbox.info()
            log.info("sandbox %s enforces %s", info.backend, ", ".join(info.enforces))
            if info.reason:
                log.warning("sandbox: %s", info.reason)
    log.info("%s device key %s (%s)", "created" if created else "loaded", device_id, keypair)
    log.info(
        "detected %s: %s, %d cores, %d GPU(s)",
        hardware.kind.value,
        hardware.cpu_model,
        hardware.cpu_cores,
        len(hardware.gpus),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with reported_errors(), Client(server, keypair=kp) as client:
        agent = Agent(
            client,
            hardware,
            name=name,
            location=location,
            owner=owner_kp,
            ray=RayConfig(
                node_ip=ray_ip,
                object_store_mb=ray_object_store_mb,
                num_cpus=ray_num_cpus,
                log_dir=ray_log_dir,
                memory_mb=ray_memory_mb,
                peer_network=ray_peer_network,
                gpus=tuple(g.index for g in hardware.gpus),
            ),
            sandbox=sandbox,
            beats=not no_beats,
        )
        agent.run(stop)
    log.info("agent stopped")


@app.command()
def up(
    workers: Annotated[int, typer.Option(min=1, max=32, help="local worker agents")] = 3,
    port: Annotated[int, typer.Option(help="control-plane port")] = 8470,
    data_dir: Annotated[Path, typer.Option(help="state of the local network")] = Path(".idlegrid"),
    overlay: Annotated[
        bool,
        typer.Option(
            "--overlay/--no-overlay",
            help="clusters over WireGuard, with a local relay, where the agents can "
            "(root, the sandbox, wireguard-go); else on direct addresses",
        ),
    ] = True,
) -> None:
    """Run a local network (control plane + workers) until Ctrl-C."""
    sys.exit(_run_local_network(workers=workers, port=port, data_dir=data_dir, overlay=overlay))


def _run_local_network(*, workers: int, port: int, data_dir: Path, overlay: bool) -> int:
    """Keep a local network running until Ctrl-C (or SIGTERM); the exit status."""
    from idlegrid.localnet import LocalNetwork

    net = LocalNetwork(
        data_dir, port=port, workers=workers, heartbeat_interval_s=5.0, overlay=overlay
    )
    try:
        with console.status("starting the control plane…"):
            net.start_server()
        if net.overlay_off is not None:
            console.print(f"[yellow]no overlay here[/yellow]: {net.overlay_off}")
        for i in range(workers):
            net.start_worker(i)
        console.print(
            f"local network up: control plane at [bold]{net.server_url}[/bold], "
            f"{workers} worker agents (logs in {net.data_dir / 'logs'})\n"
            f"try: idlegrid devices list --server {net.server_url}\n"
            "Ctrl-C stops it."
        )
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        console.print(f"[red]error[/red]: {exc}")
        return 1
    finally:
        with console.status("stopping…"):
            net.close()
    return 0


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="control-plane port")] = 8470,
    data_dir: Annotated[Path, typer.Option(help="state of the demo network")] = Path(
        ".idlegrid/demo"
    ),
) -> None:
    """Start a local network, show devices joining, failing and healing, then exit."""
    from idlegrid.cli.demo import run_demo

    sys.exit(run_demo(port=port, data_dir=data_dir))


if __name__ == "__main__":
    app()
