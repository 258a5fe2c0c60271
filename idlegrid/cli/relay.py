"""``idlegrid relay``: run an overlay relay (``idlegrid/relay.py``) until stopped.

A relay needs only two facts of its network: the network's name and the control
plane's public key (the authority that signs overlay tickets). Either give them
(``--network``, ``--authority``) or ask a control plane once (``--server``:
``GET /v1/overlay`` answers ``{"network": ..., "authority": ...}``). The relay
keeps no other state and never talks to the control plane again, so any number
of them can run anywhere with a public UDP port.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from idlegrid.cli.common import err_console


def _listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 <= number <= 65535:
        raise typer.BadParameter("expected HOST:PORT, e.g. 0.0.0.0:3478", param_hint="--listen")
    return host.strip("[]"), number


def _overlay_facts(server: str) -> tuple[str, str]:
    """The network's name and the control plane's key, from ``GET /v1/overlay``."""
    import httpx

    try:
        response = httpx.get(f"{server.rstrip('/')}/v1/overlay", timeout=10.0)
        response.raise_for_status()
        body = response.json()
        return str(body["network"]), str(body["authority"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        err_console.print(f"[red]error[/red]: {server}/v1/overlay: {exc}")
        raise typer.Exit(1) from None


def relay(
    listen: Annotated[
        str, typer.Option(help="UDP address to listen on, HOST:PORT")
    ] = "0.0.0.0:3478",
    server: Annotated[
        str | None,
        typer.Option(help="control-plane URL to read the network and authority from"),
    ] = None,
    network: Annotated[str | None, typer.Option(help="the network's name")] = None,
    authority: Annotated[
        str | None, typer.Option(help="the control plane's public key (base58)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Relay the overlay's WireGuard packets between members of each cluster."""
    from idlegrid.relay import serve_relay

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host, port = _listen_address(listen)
    if server is not None:
        if network is not None or authority is not None:
            raise typer.BadParameter("give --server, or --network and --authority, not both")
        network, authority = _overlay_facts(server)
    elif network is None or authority is None:
        raise typer.BadParameter("give --server, or both --network and --authority")

    async def run(network: str, authority: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_relay(host, port, network, authority, stop=stop)

    try:
        asyncio.run(run(network, authority))
    except OSError as exc:
        err_console.print(f"[red]error[/red]: cannot listen on {listen}: {exc}")
        raise typer.Exit(1) from None
