"""How long a quote takes through the service, database included, on this machine::

    .venv/bin/python benchmarks/quotes.py [--devices 100000] [--requests 200]
                                          [--baseline-requests 20] [--json]

It builds the server's state (``build_state``, SQLite in a temporary folder), stores
``--devices`` ready, live, sandboxed devices (GPUs of the catalog's models, Zipf-skewed
popularity, 20 countries, tiers 1–4, a tenth with a floor) and times
``QuoteService.quote`` for 8-device requests of a model (half of them in one country),
what a buyer waits for minus HTTP: the requester's standing, the match, the dynamic
price, the match again under the price's cap, and the quote's row written.

- **index**: the server as wired, matching through ``MarketIndex``.
- **scan** (the baseline, in the same run): the same service with no index, so each
  quote loads every hireable device and its proof history from the database and runs
  the linear ``match`` (what the server did before issue 18).

It prints p50 / p99 / max of each, and the ratio of the p50s and of the p99s, plus the
index's start-up load (``reload``). One Python thread, garbage collector on.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from idlegrid.catalog import load_catalog
from idlegrid.protocol import DeployRequest, DeviceKind, DeviceStatus
from idlegrid.server.app import build_state
from idlegrid.server.db.bulk import chunks
from idlegrid.server.db.models import Device
from idlegrid.server.services.market import Marketplace
from idlegrid.server.services.quotes import QuoteService
from idlegrid.server.settings import ServerSettings

SEED = 18
COUNTRIES = [
    "US",
    "DE",
    "FR",
    "GB",
    "NL",
    "PL",
    "CA",
    "JP",
    "KR",
    "SG",
    "IN",
    "BR",
    "SE",
    "FI",
    "ES",
    "IT",
    "CH",
    "AU",
    "TW",
    "IE",
]


def store_devices(state, n: int, rng: random.Random) -> list[str]:  # type: ignore[no-untyped-def]
    """``n`` ready devices in the database and the liveness table; the models asked for."""
    models = [m for m in load_catalog().models if m.kind is DeviceKind.GPU]
    rng.shuffle(models)
    weights = [1 / (i + 1) for i in range(len(models))]
    cweights = [1 / (i + 1) for i in range(len(COUNTRIES))]
    now = state.clock()
    rows = []
    for i in range(n):
        model = rng.choices(models, weights)[0]
        rows.append(
            {
                "id": f"dev{i:07d}",
                "owner": f"owner{i % 5000:05d}",
                "location": rng.choices(COUNTRIES, cweights)[0],
                "status": DeviceStatus.UP.value,
                "status_version": 0,
                "readiness": "cluster_ready",
                "kind": "gpu",
                "model": model.key,
                "processors": 1,
                "hardware": {},
                "agent_version": "bench",
                "registered_at": now - 86_400 * rng.uniform(1, 60),
                "last_seen_at": now,
                "uptime_s": 86_400 * rng.uniform(0.5, 50),
                "tier": rng.choice((1, 2, 2, 3, 3, 4)),
                "floor_micro_usd": rng.choice((0,) * 9 + (rng.randrange(100_000, 3_000_000),)),
                "sandbox_backend": "bubblewrap",
            }
        )
    with state.devices.sessions.begin() as db:
        for chunk in chunks(rows, 20_000):
            db.execute(insert(Device), list(chunk))
    for r in rows:
        state.liveness.load(r["id"], DeviceStatus.UP, now, 0)
    return [m.key for m in models[:8]]


def timed(quotes: QuoteService, requests: list[DeployRequest]) -> list[float]:
    out = []
    for i, req in enumerate(requests):
        started = time.perf_counter()
        quotes.quote(f"buyer{i % 50}", req)
        out.append(time.perf_counter() - started)
    return out


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "max_ms": ms[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--baseline-requests", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        settings = ServerSettings(
            environment="development", database_url=f"sqlite:///{Path(tmp) / 'q.db'}", data_dir=tmp
        )
        at = time.time()

        def clock() -> float:
            return at  # frozen: storing 100k devices outlasts the heartbeat TTL

        state = build_state(settings, clock)
        popular = store_devices(state, args.devices, rng)
        market = state.quotes.market
        assert market.index is not None
        started = time.perf_counter()
        market.index.reload()
        reload_s = time.perf_counter() - started

        def request(i: int) -> DeployRequest:
            locations = [COUNTRIES[0]] if i % 2 else []
            model = popular[i % len(popular)]
            return DeployRequest(name="bench", hardware=model, quantity=8, locations=locations)

        requests = [request(i) for i in range(args.requests)]
        index_s = timed(state.quotes, requests)
        scan_market = Marketplace(
            market.sessions, market.liveness, market.catalog, market.oracle, clock
        )
        scan = QuoteService(state.quotes.sessions, scan_market, settings, clock)
        scan_s = timed(scan, requests[: args.baseline_requests])
        state.engine.dispose()
    result = {
        "devices": args.devices,
        "reload_s": reload_s,
        "index": summary(index_s),
        "scan": summary(scan_s),
    }
    result["ratio_p50"] = result["scan"]["p50_ms"] / result["index"]["p50_ms"]  # type: ignore[index]
    result["ratio_p99"] = result["scan"]["p99_ms"] / result["index"]["p99_ms"]  # type: ignore[index]
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"{args.devices:,} ready devices; index start-up load {reload_s:.1f} s")
    for name, n in (("index", args.requests), ("scan", args.baseline_requests)):
        s = result[name]
        print(
            f"  {name:5} {n:4} quotes: p50 {s['p50_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms"  # type: ignore[index]
            f"  max {s['max_ms']:8.1f} ms"  # type: ignore[index]
        )
    print(f"  scan / index: p50 ×{result['ratio_p50']:.0f}, p99 ×{result['ratio_p99']:.0f}")
    print("  goal: quote p99 ≤ 20 ms at 1,000,000 ready devices")


if __name__ == "__main__":
    main()
