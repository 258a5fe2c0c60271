"""A reward block as published: its canonical JSON, its hashes, and rows for people. Pure.

``inputs_hash`` and ``outputs_hash`` are SHA-256 over a canonical JSON encoding
(sorted keys, no spaces, ASCII): the inputs as columns, the outputs as columns
aligned with them (``docs/rewards.md`` has the layout). The block carries its
inputs' hash, so its outputs hash commits to both. These bytes are what everyone who
checks a block recomputes and compares, so they change only with a new
``ENCODING_VERSION`` (``tests/test_rewards_core.py`` pins two blocks' hashes).

The encoding knows what a block holds (``core/block_columns.py``) and no rule:
recomputing a block to verify it is the rules' (``core/rewards.verify_block``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import orjson

from idlegrid.core.block_columns import COLUMNS, BlockInputs, BlockResult, Devices, multiplier_text
from idlegrid.errors import InvalidRequest

ENCODING_VERSION = 2


def inputs_to_dict(inputs: BlockInputs) -> dict[str, Any]:
    """The canonical, JSON-ready form of a block's inputs (what is published)."""
    d = inputs.devices
    return {
        "v": ENCODING_VERSION,
        "hour": inputs.hour,
        "emission_units": inputs.emission_units,
        "gpu_pool_bps": inputs.gpu_pool_bps,
        "devices": {name: getattr(d, name) for name in COLUMNS},
        "costakers": d.costakers,
    }


def inputs_from_dict(data: Mapping[str, Any]) -> BlockInputs:
    """Rebuild published inputs (the inverse of ``inputs_to_dict``)."""
    if data.get("v") != ENCODING_VERSION:
        raise InvalidRequest("unknown block encoding version", v=data.get("v"))
    try:
        columns = data["devices"]
        devices = Devices(
            **{name: columns[name] for name in COLUMNS},
            costakers=[tuple(entry) for entry in data["costakers"]],
        )
        return BlockInputs(
            hour=data["hour"],
            emission_units=data["emission_units"],
            devices=devices,
            gpu_pool_bps=data["gpu_pool_bps"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest("malformed block inputs", error=str(exc)) from None


def block_to_dict(block: BlockResult) -> dict[str, Any]:
    """The canonical, JSON-ready form of a block (what is published); its per-device
    columns are aligned with the inputs' devices."""
    return {
        "v": ENCODING_VERSION,
        "hour": block.hour,
        "inputs_hash": block.inputs_hash,
        "emission_units": block.emission_units,
        "unpaid_units": block.unpaid_units,
        "notes": list(block.notes),
        "score_denominator": block.score_denominator,
        "pools": [
            {
                "kind": p.kind.value,
                "share_units": p.share_units,
                "paid_units": p.paid_units,
                "nominated": p.nominated,
                "weight": p.weight,
            }
            for p in block.pools
        ],
        "devices": {
            "weight": block.weights,
            "units": block.units,
            "owner_units": block.owner_units,
            "reasons": block.reasons,
        },
        "costakers": block.costaker_units,
    }


def canonical_json(data: Mapping[str, Any]) -> bytes:
    """``json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``,
    as bytes: what is hashed and published. orjson writes the same bytes three times
    as fast for what blocks hold (integers within 64 bits, ASCII text); anything else
    takes the standard library's path, so the bytes never depend on the encoder."""
    try:
        out = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        out = b""  # an integer beyond 64 bits
    if out and out.isascii():
        return out
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def document_hash(document: bytes) -> str:
    """The hash a published document is known by: SHA-256 of its exact bytes."""
    return hashlib.sha256(document).hexdigest()


def inputs_hash(inputs: BlockInputs) -> str:
    return document_hash(canonical_json(inputs_to_dict(inputs)))


def outputs_hash(block: BlockResult) -> str:
    return document_hash(canonical_json(block_to_dict(block)))


def published_rows(
    inputs: Mapping[str, Any], outputs: Mapping[str, Any], limit: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A published block as rows for people: (nominated devices, excluded devices), by
    id, at most ``limit`` of each. Nominated: device_id, owner, kind, score ("p/q"),
    units, owner_units and costakers ([staker, units]); excluded: device_id, reasons."""
    d, out = inputs["devices"], outputs["devices"]
    denominator = outputs["score_denominator"]
    costakers: dict[int, list[list[Any]]] = {}
    for i, staker, units in outputs["costakers"]:
        costakers.setdefault(i, []).append([staker, units])
    paid: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for i, why in enumerate(out["reasons"]):
        if limit is not None and len(paid) >= limit and len(excluded) >= limit:
            break
        if why:
            if limit is None or len(excluded) < limit:
                excluded.append({"device_id": d["device_id"][i], "reasons": why.split(",")})
        elif limit is None or len(paid) < limit:
            paid.append(
                {
                    "device_id": d["device_id"][i],
                    "owner": d["owner"][i],
                    "kind": d["kind"][i],
                    "score": multiplier_text(Fraction(out["weight"][i], denominator)),
                    "units": out["units"][i],
                    "owner_units": out["owner_units"][i],
                    "costakers": costakers.get(i, []),
                }
            )
    return paid, excluded
