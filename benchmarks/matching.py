"""How fast ``MatchIndex`` (``idlegrid/core/match_index.py``) picks devices, on this machine::

    .venv/bin/python benchmarks/matching.py [--sizes 10000,100000,1000000] [--requests 1000]
                                            [--json]

Each size N runs in a process of its own. It makes a fleet of N random devices and prints:

1. **Build time** of ``MatchIndex(fleet)``, and memory: what the ``Candidate`` objects
   take (the growth of the resident set while the fleet is made), what the index adds
   on top of them (its growth during the build), and the process's peak resident set,
   which includes a second index built for the second placement run.
2. **Match latency**, p50 / p99 / max, of 8-device requests of four typical shapes,
   ``--requests`` of each: a model; a model in one country; a kind only; a model at
   tier ≥ 3. Two rarer shapes are shown for information: a requester in poor standing
   (``max_reputation`` 0.9, a model) and a supplier's own devices (one large supplier,
   a kind). Requests pick models and countries by the fleet's popularity, so most
   go where most devices are. Nothing is removed: every request sees all N devices.
3. **Devices placed per second**: ``take`` of the same mix of 8-device requests, and
   of 64-device requests, each removing what it picks, until 20,000 devices (at most
   a fifth of the fleet) are placed. Requests that find too few devices count in the
   time but place nothing.
4. **Mega-ray**: one request for every device of a kind (CPUs, then GPUs), best first.
5. **Agreement**: a few requests of each shape, compared with the linear reference
   ``match`` over the same devices (devices, order and explain counts).

The fleet: the catalog's models (``load_catalog()``), 70% GPUs, 20% CPUs, 10% Apple,
popularity Zipf-skewed within each kind; 30 countries, also Zipf-skewed, and 1% of
devices with no known location; tiers 1–4 (20/35/30/15%); eight large suppliers with
5% of the fleet each, spread over every model and country, and small suppliers (1 to
100 devices, 21 on average, one country and tier, one or two models) for the rest;
reputation from ``device_reputation`` over uptime and proof histories; 30% of devices
ask their own price. The seed is fixed, so runs are comparable.

The last lines compare the 1,000,000-device figures with the goals (p99 ≤ 10 ms for
an 8-device request, ≥ 10,000 devices placed per second) and with the anchors in
DESIGN.md (kube-scheduler ~100 pods/s, Nomad ~1,500 containers/s). Each figure is one
Python thread on one core, with the garbage collector on as in a server; other work on
the machine makes the figures noisier. The default run takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import psutil
from common import finish, machine, parse_counts, peak_rss_mb, print_table

from idlegrid.catalog import load_catalog
from idlegrid.core.match_index import MatchIndex
from idlegrid.core.matching import Candidate, Requirements, device_reputation, match

GOAL_P99_MS = 10.0
GOAL_PLACED_PER_S = 10_000
ANCHORS = {"kube-scheduler": 100, "Nomad": 1_500}  # placements per second, DESIGN.md
COUNTRIES = (
    "US",
    "DE",
    "CN",
    "GB",
    "FR",
    "NL",
    "CA",
    "JP",
    "KR",
    "IN",
    "SG",
    "BR",
    "PL",
    "SE",
    "FI",
    "IT",
    "ES",
    "AU",
    "CH",
    "NO",
    "UA",
    "RU",
    "TR",
    "VN",
    "ID",
    "TW",
    "HK",
    "ZA",
    "AR",
    "MX",
)
KIND_SHARE = {"gpu": 0.7, "cpu": 0.2, "apple": 0.1}
TIER_SHARE = {1: 0.20, 2: 0.35, 3: 0.30, 4: 0.15}
LARGE_SUPPLIERS = 8
LARGE_SHARE = 0.05
PLACE = 20_000
QUANTITY = 8
SEED = 20_270_101

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


class Picker:
    """Draws from a fixed list with fixed weights (cumulative weights, built once)."""

    def __init__(self, items: Sequence[Any], weights: Sequence[float]) -> None:
        self.items = list(items)
        self.cum = list(accumulate(weights))

    def __call__(self, rng: random.Random) -> Any:
        return rng.choices(self.items, cum_weights=self.cum)[0]


def zipf(n: int, s: float = 1.0) -> list[float]:
    return [1 / (rank**s) for rank in range(1, n + 1)]


@dataclass
class RandomFleet:
    """Random candidates, with the distributions they were drawn from, so that requests
    ask for kinds, models and countries as popular as the fleet holds them."""

    devices: list[Candidate]
    kinds: Picker
    models: dict[str, Picker]  # per kind
    countries: Picker
    large: list[str]


def make_fleet(n: int, seed: int = SEED) -> RandomFleet:
    rng = random.Random(seed)
    by_kind: dict[str, list[str]] = {}
    for m in load_catalog().models:
        by_kind.setdefault(m.kind.value, []).append(m.key)
    models: dict[str, Picker] = {}
    for kind, keys in by_kind.items():
        rng.shuffle(keys)  # which model is the popular one: random, but fixed by the seed
        models[kind] = Picker(keys, zipf(len(keys)))
    kinds = Picker(list(KIND_SHARE), list(KIND_SHARE.values()))
    countries = Picker(COUNTRIES, zipf(len(COUNTRIES), 0.8))
    tiers = Picker(list(TIER_SHARE), list(TIER_SHARE.values()))

    def key() -> str:
        return f"{rng.getrandbits(176):044x}"  # as long as a base58 public key

    def device(kind: str, model: str, location: str | None, tier: int, supplier: str) -> Candidate:
        uptime = 1.0 - rng.random() ** 3 * 0.4
        passed = int(rng.expovariate(1 / 60))
        failed = 0 if rng.random() < 0.93 else rng.randint(1, 3)
        processors = rng.choice((1, 1, 2, 4, 8, 8)) if kind == "gpu" else 1
        price = 0 if rng.random() < 0.7 else rng.randint(10_000_000, 500_000_000)
        return Candidate(
            device_id=key(),
            kind=kind,
            model=model,
            location=None if rng.random() < 0.01 else location,
            tier=tier,
            supplier=supplier,
            processors=processors,
            reputation=device_reputation(uptime, passed, failed),
            price=price,
        )

    out: list[Candidate] = []
    large = [key() for _ in range(LARGE_SUPPLIERS)]
    per_large = int(n * LARGE_SHARE)
    for supplier in large:
        for _ in range(per_large):
            kind = kinds(rng)
            out.append(device(kind, models[kind](rng), countries(rng), tiers(rng), supplier))
    while len(out) < n:
        supplier, country, tier, kind = key(), countries(rng), tiers(rng), kinds(rng)
        own = [models[kind](rng) for _ in range(rng.choice((1, 1, 2)))]
        size = min(n - len(out), 100, 1 + int(rng.expovariate(1 / 20)))
        for _ in range(size):
            out.append(device(kind, rng.choice(own), country, tier, supplier))
    rng.shuffle(out)
    return RandomFleet(out, kinds, models, countries, large)


# -- requests --------------------------------------------------------------------------------

Shape = Callable[[random.Random, RandomFleet, int], Requirements]


def by_model(rng: random.Random, f: RandomFleet, q: int) -> Requirements:
    kind = f.kinds(rng)
    return Requirements(model=f.models[kind](rng), kind=kind, quantity=q)


def by_model_location(rng: random.Random, f: RandomFleet, q: int) -> Requirements:
    kind = f.kinds(rng)
    loc = frozenset({f.countries(rng)})
    return Requirements(model=f.models[kind](rng), kind=kind, quantity=q, locations=loc)


def by_kind(rng: random.Random, f: RandomFleet, q: int) -> Requirements:
    return Requirements(kind=f.kinds(rng), quantity=q)


def by_model_tier(rng: random.Random, f: RandomFleet, q: int) -> Requirements:
    kind = f.kinds(rng)
    return Requirements(model=f.models[kind](rng), kind=kind, quantity=q, min_tier=3)


def poor_standing(rng: random.Random, f: RandomFleet, q: int) -> Requirements:
    kind = f.kinds(rng)
    return Requirements(model=f.models[kind](rng), kind=kind, quantity=q, max_reputation=0.9)


def one_supplier(rng: random.Random, f: RandomFleet, q: int) -> Requirements:
    supplier = frozenset({rng.choice(f.large)})
    return Requirements(kind=f.kinds(rng), quantity=q, suppliers=supplier)


TYPICAL: dict[str, Shape] = {
    "model": by_model,
    "model+location": by_model_location,
    "kind only": by_kind,
    "model, tier ≥ 3": by_model_tier,
}
RARER: dict[str, Shape] = {
    "poor standing (≤ 0.9)": poor_standing,
    "one supplier, kind": one_supplier,
}


def mixed(rng: random.Random, f: RandomFleet, q: int) -> Requirements:
    return rng.choice(list(TYPICAL.values()))(rng, f, q)


# -- timing ----------------------------------------------------------------------------------


def percentile(sorted_ms: Sequence[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(p / 100 * len(sorted_ms)))]


def time_matches(index: MatchIndex, reqs: Sequence[Requirements]) -> dict[str, Any]:
    ms: list[float] = []
    found = 0
    for req in reqs:
        started = time.perf_counter()
        m = index.match(req)
        ms.append((time.perf_counter() - started) * 1000)
        found += m.ok
    ms.sort()
    return {
        "requests": len(reqs),
        "filled": found,
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(ms[-1], 3),
    }


def time_takes(
    index: MatchIndex, rng: random.Random, f: RandomFleet, q: int, n: int
) -> dict[str, Any]:
    reqs = [mixed(rng, f, q) for _ in range(3 * n // q + 100)]
    placed = requests = 0
    seen: set[str] = set()
    started = time.perf_counter()
    for req in reqs:
        m = index.take(req)
        requests += 1
        placed += len(m.devices)
        seen.update(c.device_id for c in m.devices)
        if placed >= n:
            break
    seconds = time.perf_counter() - started
    if len(seen) != placed:
        raise AssertionError("take returned a device twice")
    return {
        "quantity": q,
        "requests": requests,
        "placed": placed,
        "seconds": round(seconds, 3),
        "placed_per_s": round(placed / seconds, 1),
        "ms_per_take": round(1000 * seconds / requests, 3),
    }


def check_agreement(
    index: MatchIndex, fleet: RandomFleet, rng: random.Random, per_shape: int
) -> int:
    checked = 0
    for shape in (*TYPICAL.values(), *RARER.values()):
        for _ in range(per_shape):
            req = shape(rng, fleet, QUANTITY)
            want, got = match(fleet.devices, req), index.match(req)
            if want != got:
                raise AssertionError(f"MatchIndex disagrees with match() on {req}")
            checked += 1
    return checked


def bench_size(n: int, requests: int) -> dict[str, Any]:
    """Everything for one fleet size; run in a process of its own (``main``)."""
    gc.collect()
    before = rss_mb()
    progress(f"{n:,} devices: generating the fleet (not timed)")
    fleet = make_fleet(n)
    gc.collect()
    with_fleet = rss_mb()
    progress(f"{n:,} devices: building the index")
    started = time.perf_counter()
    index = MatchIndex(fleet.devices)
    build_s = time.perf_counter() - started
    gc.collect()
    out: dict[str, Any] = {
        "devices": n,
        "build_s": round(build_s, 3),
        "fleet_mb": round(with_fleet - before, 1),
        "index_mb": round(rss_mb() - with_fleet, 1),
        "latency": {},
    }
    rng = random.Random(SEED + n)
    for name, shape in {**TYPICAL, **RARER}.items():
        reqs = [shape(rng, fleet, QUANTITY) for _ in range(requests)]
        index.match(reqs[0])  # warm
        out["latency"][name] = r = time_matches(index, reqs)
        progress(f"    {name}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
    out["mega_ray"] = []
    for kind in ("cpu", "gpu"):  # every device of a kind, best first
        started = time.perf_counter()
        found = index.match(Requirements(kind=kind, quantity=None))
        ms = (time.perf_counter() - started) * 1000
        out["mega_ray"].append({"kind": kind, "devices": len(found.devices), "ms": round(ms, 1)})
    del found
    # the worst typical shape decides
    out["typical_p99_ms"] = max(
        r["p99_ms"] for name, r in out["latency"].items() if name in TYPICAL
    )
    per_shape = 2 if n >= 1_000_000 else 5
    out["agreement_checked"] = check_agreement(index, fleet, rng, per_shape)
    progress(f"    agrees with match() on {out['agreement_checked']} requests")
    out["placement"] = []
    for q in (QUANTITY, 64):
        if out["placement"]:  # every run starts from the whole fleet
            del index
            gc.collect()
            index = MatchIndex(fleet.devices)
        r = time_takes(index, rng, fleet, q, min(PLACE, n // 5))
        out["placement"].append(r)
        progress(f"    take {q}: {r['placed_per_s']:,.0f} devices placed/s")
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def run_sizes(sizes: Sequence[int], requests: int) -> list[dict[str, Any]]:
    """Each size in a fresh process, so that its memory figures are its own."""
    out = []
    for n in sizes:
        child = [sys.executable, __file__, "--child", str(n), "--requests", str(requests)]
        done = subprocess.run(child, stdout=subprocess.PIPE, check=True, text=True)
        out.append(json.loads(done.stdout))
    return out


# -- the report ------------------------------------------------------------------------------


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    at = next((r for r in results["sizes"] if r["devices"] == 1_000_000), None)
    if at is None:
        return {"result": "NOT MEASURED (run with 1000000 in --sizes)"}
    p99 = at["typical_p99_ms"]
    rate = next(r["placed_per_s"] for r in at["placement"] if r["quantity"] == QUANTITY)
    ok = p99 <= GOAL_P99_MS and rate >= GOAL_PLACED_PER_S
    return {
        "p99_ms": p99,
        "placed_per_s": rate,
        "goal_p99_ms": GOAL_P99_MS,
        "goal_placed_per_s": GOAL_PLACED_PER_S,
        "result": "PASS" if ok else "FAIL",
    }


def print_report(results: dict[str, Any]) -> None:
    sizes = results["sizes"]
    print_table(
        "MatchIndex: build and memory",
        "lrrrrr",
        ("devices", "build", "candidates", "index", "peak RSS", "agrees with match()"),
        [
            (
                f"{r['devices']:,}",
                f"{r['build_s']:.2f} s",
                f"{r['fleet_mb']:,.0f} MB",
                f"{r['index_mb']:,.0f} MB",
                f"{r['peak_rss_mb']:,.0f} MB",
                f"{r['agreement_checked']} requests",
            )
            for r in sizes
        ],
    )
    rows = []
    for r in sizes:
        for name, lat in r["latency"].items():
            rare = "" if name in TYPICAL else " *"
            rows.append(
                (
                    f"{r['devices']:,}",
                    name + rare,
                    f"{lat['filled']}/{lat['requests']}",
                    f"{lat['p50_ms']:.3f}",
                    f"{lat['p99_ms']:.3f}",
                    f"{lat['max_ms']:.3f}",
                )
            )
    print_table(
        f"MatchIndex.match: {QUANTITY}-device requests, latency in ms (* rarer shapes)",
        "llrrrr",
        ("devices", "request", "filled", "p50", "p99", "max"),
        rows,
    )
    print_table(
        "MatchIndex.take: devices placed per second (typical shapes mixed)",
        "lrrrrrr",
        ("devices", "per request", "requests", "placed", "seconds", "ms/take", "placed/s"),
        [
            (
                f"{r['devices']:,}",
                str(p["quantity"]),
                f"{p['requests']:,}",
                f"{p['placed']:,}",
                f"{p['seconds']:.2f}",
                f"{p['ms_per_take']:.3f}",
                f"{p['placed_per_s']:,.0f}",
            )
            for r in sizes
            for p in r["placement"]
        ],
    )
    print("\nMega-ray, every device of a kind, best first (one request each):")
    for r in sizes:
        each = "; ".join(
            f"{m['kind']} {m['devices']:,} in {m['ms']:,.0f} ms" for m in r["mega_ray"]
        )
        print(f"  {r['devices']:,}: {each}")
    v = results["verdict"]
    print()
    if "p99_ms" not in v:
        print(f"Goals: {v['result']}")
    else:
        anchors = ", ".join(f"{k} ~{n:,}/s" for k, n in ANCHORS.items())
        print(
            f"Goals at 1,000,000 devices: p99 {v['p99_ms']:.2f} ms (worst typical shape; goal "
            f"≤ {GOAL_P99_MS:g} ms), {v['placed_per_s']:,.0f} devices placed/s by "
            f"{QUANTITY}-device takes (goal ≥ {GOAL_PLACED_PER_S:,}): {v['result']}. "
            f"Anchors: {anchors}."
        )
    m = results["machine"]
    print(
        f"Machine: {m['cpus']} CPUs ({m['processor']}), Python {m['python']}, one process "
        f"per size; {results['total_s']:.0f} s in all."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure MatchIndex: latency and placements/s.")
    parser.add_argument(
        "--sizes",
        type=functools.partial(parse_counts, low=100),
        default=[10_000, 100_000, 1_000_000],
        help="fleet sizes (default 10000,100000,1000000)",
    )
    parser.add_argument(
        "--requests", type=int, default=1_000, help="requests per shape and size (default 1000)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one size, as JSON
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(bench_size(args.child, args.requests)))
        return 0
    results: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join([sys.executable, *sys.argv]),
        "sizes": run_sizes(args.sizes, args.requests),
    }
    results["verdict"] = verdict(results)
    return finish(results, _T0, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
