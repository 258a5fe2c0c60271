"""``idlegrid catalog``: the hardware models the network knows."""

from __future__ import annotations

from typing import Annotated

import typer

from idlegrid.catalog import load_catalog
from idlegrid.cli.common import JsonOpt, console, plain_table, print_json
from idlegrid.protocol import DeviceKind


def catalog(
    kind: Annotated[DeviceKind | None, typer.Option(help="only this kind")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List supported hardware: memory, dense throughput and reward multiplier."""
    models = [m for m in load_catalog().models if kind is None or m.kind is kind]
    if as_json:
        print_json(
            [
                {
                    "key": m.key,
                    "name": m.name,
                    "kind": m.kind.value,
                    "vendor": m.vendor,
                    "vram_gb": m.vram_gb,
                    "fp32_tflops": m.fp32_tflops,
                    "tf32_tflops": m.tf32_tflops,
                    "bf16_tflops": m.bf16_tflops,
                    "multiplier": m.multiplier,
                    "multiplier_source": m.multiplier_source,
                }
                for m in models
            ]
        )
        return
    table = plain_table(
        "key", "kind", "VRAM GB", "FP32", "BF16", "mult", "source", right=("FP32", "BF16")
    )
    for m in models:
        table.add_row(
            m.key,
            m.kind.value,
            f"{m.vram_gb:g}",
            f"{m.fp32_tflops:g}",
            f"{m.bf16_tflops:g}",
            f"{m.multiplier:g}",
            m.multiplier_source,
        )
    console.print(table)
    console.print("TFLOPS are dense vendor peaks; per core for CPUs.")
