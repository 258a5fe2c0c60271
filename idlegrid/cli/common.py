"""Shared CLI plumbing: the server option, JSON output and error reporting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table

from idlegrid.errors import IdlegridError

if TYPE_CHECKING:
    from idlegrid.sdk import Client

M = TypeVar("M", bound=BaseModel)

DEFAULT_SERVER = "http://127.0.0.1:8470"

console = Console()
err_console = Console(stderr=True)

ServerOpt = Annotated[
    str,
    typer.Option("--server", envvar="IDLEGRID_SERVER", help="control-plane URL", show_default=True),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


def print_json(value: BaseModel | dict[str, Any] | list[Any]) -> None:
    if isinstance(value, BaseModel):
        typer.echo(value.model_dump_json(indent=2))
    else:
        typer.echo(json.dumps(value, indent=2, default=str))


@contextmanager
def reported_errors(as_json: bool = False) -> Iterator[None]:
    """Turn idlegrid errors into a one-line message (or JSON) and exit code 1."""
    try:
        yield
    except IdlegridError as exc:
        if as_json:
            print_json(exc.to_body())
        else:
            err_console.print(f"[red]error[/red] [bold]{exc.code}[/bold]: {exc.message}")
            for key, value in exc.details.items():
                err_console.print(f"  {key}: {value}")
        raise typer.Exit(1) from None


@contextmanager
def local_input() -> Iterator[None]:
    """A bad keypair or hardware file, or one that cannot be read: one line, exit 2."""
    from pydantic import ValidationError

    from idlegrid.identity import KeypairFileError

    try:
        yield
    except (KeypairFileError, OSError, ValidationError) as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None


def fmt_time(at: float) -> str:
    """A Unix time as the CLI prints it: UTC, to the minute."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def signed_client(server: str, keypair: Path) -> Client:
    """A client that signs with the keypair in ``keypair`` (a bad file: exit 2)."""
    from idlegrid.identity import load_keypair
    from idlegrid.sdk import Client

    with local_input():
        kp = load_keypair(keypair.expanduser())
    return Client(server, keypair=kp)


def call_and_show(
    client: Client, as_json: bool, call: Callable[[Client], M], show: Callable[[M], object]
) -> M:
    """Make one call (errors reported, exit 1), then print JSON or ``show`` it."""
    with reported_errors(as_json), client:
        view = call(client)
    if as_json:
        print_json(view)
    else:
        show(view)
    return view


def plain_table(*columns: str, right: tuple[str, ...] = (), overflow: str | None = None) -> Table:
    """The CLI's table: a rule under the head, no edges, one space between columns,
    no wrapping; the columns named in ``right`` justified right."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for col in columns:
        table.add_column(
            col,
            no_wrap=True,
            justify="right" if col in right else "left",
            overflow=overflow,  # type: ignore[arg-type]
        )
    return table
