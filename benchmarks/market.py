"""Which pricing policy serves the market best, in simulated weeks::

    .venv/bin/python benchmarks/market.py [--weeks 2] [--seed 1] [--out benchmarks/out/market]
                                          [--json]

Plays the simulator's standard scenario (``idlegrid.sim.market.standard_scenario``: five
models in four regions, a daily cycle of demand on each region's clock) once per policy
(fixed list price, dynamic, auction) over the same devices and buyers, and prints one row
per policy:

- **fill**: requests served ÷ requests that arrived in the measured window;
- **util**: device-hours hired ÷ device-hours online;
- **cost/dh**: USD paid per device-hour bought (the mix of models differs by policy, so
  **vs list** gives what was paid ÷ the same device-hours at list price);
- **revenue**: USD paid to providers, before fees;
- **volatility**: each pool's (model × region) hourly mean traded price, its mean absolute
  change from one traded hour to the next ÷ its mean, pooled over pools; **price CV**:
  its standard deviation ÷ mean, the same way;
- **fill h**: hours from arrival to start, mean and 90th percentile, served requests;
- **left**: the share of requests that left because every price was over their budget,
  or because too few devices were idle (at or under the price).

Then the issue's claim, line by line (dynamic fills ≥ fixed, utilisation ≥ fixed,
volatility < auction). It writes ``market.md`` (the table and the claim), ``prices.png``
(the H100's hourly mean price by policy), ``utilisation.png`` and ``metrics.png`` into
``--out``. ``--json`` prints the figures as JSON instead of the table. The same seed gives
the same figures; the default run takes a few seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from idlegrid.sim.market import Metrics, Policy, Run, compare, pool_hour_prices, standard_scenario

COLUMNS = (
    ("policy", "{}"),
    ("fill", "{:.1%}"),
    ("util", "{:.1%}"),
    ("cost/dh USD", "{:.3f}"),
    ("vs list", "{:.2f}"),
    ("revenue USD", "{:,.0f}"),
    ("volatility", "{:.3f}"),
    ("price CV", "{:.3f}"),
    ("fill h mean", "{:.2f}"),
    ("fill h p90", "{:.0f}"),
    ("left: price", "{:.1%}"),
    ("left: supply", "{:.1%}"),
)


def _cells(m: Metrics) -> list[str]:
    values = (
        m.policy,
        m.fill_rate,
        m.utilisation,
        m.buyer_cost_usd,
        m.cost_vs_list,
        m.revenue_usd,
        m.volatility,
        m.price_cv,
        m.fill_mean_h,
        m.fill_p90_h,
        m.left_price,
        m.left_supply,
    )
    return [fmt.format(v) for (_, fmt), v in zip(COLUMNS, values, strict=True)]


def markdown_table(metrics: Sequence[Metrics]) -> str:
    head = [name for name, _ in COLUMNS]
    rows = [head, ["---"] + ["---:"] * (len(head) - 1), *(_cells(m) for m in metrics)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def claims(by: dict[Policy, Metrics]) -> list[tuple[str, bool]]:
    fixed, dynamic, auction = by[Policy.FIXED], by[Policy.DYNAMIC], by[Policy.AUCTION]
    return [
        (
            f"dynamic fills at least as many as fixed: {dynamic.fill_rate:.1%} vs "
            f"{fixed.fill_rate:.1%}",
            dynamic.fill_rate >= fixed.fill_rate,
        ),
        (
            f"dynamic utilisation at least fixed's: {dynamic.utilisation:.1%} vs "
            f"{fixed.utilisation:.1%}",
            dynamic.utilisation >= fixed.utilisation,
        ),
        (
            f"dynamic prices less volatile than the auction's: {dynamic.volatility:.3f} vs "
            f"{auction.volatility:.3f}",
            dynamic.volatility < auction.volatility,
        ),
    ]


def _model_price(run: Run, model: str) -> np.ndarray:
    """USD per device-hour, the volume-weighted mean of ``model``'s trades each hour."""
    paid, volume = pool_hour_prices(run)
    cols = [p for p, pool in enumerate(run.world.pools) if pool.model == model]
    total = volume[:, cols].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, paid[:, cols].sum(axis=1) / total / 1e6, np.nan)


def plot(runs: dict[Policy, Run], by: dict[Policy, Metrics], out: Path) -> list[Path]:
    sc = next(iter(runs.values())).world.scenario
    window = slice(sc.warmup_h, sc.warmup_h + sc.window_h)
    days = np.arange(sc.window_h) / 24
    model = sc.models[0].key
    written = []

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.add_subplot()
    for policy, run in runs.items():
        prices = _model_price(run, model)[window]
        sold = ~np.isnan(prices)  # hours without a trade have no price
        ax.plot(days[sold], prices[sold], lw=0.7, marker=".", ms=3, label=policy.value)
    title = f"{model}: hourly mean traded price, all regions (hours with trades)"
    ax.set(xlabel="day", ylabel="USD per device-hour", title=title)
    ax.legend()
    written.append(out / "prices.png")
    fig.savefig(written[-1], dpi=110)

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.add_subplot()
    for policy, run in runs.items():
        hired, online = run.hired[window].sum(axis=1), run.online[window].sum(axis=1)
        ax.plot(days, hired / np.maximum(online, 1), lw=1, label=policy.value)
    ax.set(xlabel="day", ylabel="hired ÷ online", title="utilisation, all pools", ylim=(0, 1))
    ax.legend()
    written.append(out / "utilisation.png")
    fig.savefig(written[-1], dpi=110)

    fields = [
        ("fill_rate", "fill rate"),
        ("utilisation", "utilisation"),
        ("cost_vs_list", "paid ÷ list"),
        ("revenue_usd", "provider revenue, USD"),
        ("volatility", "price volatility"),
        ("fill_mean_h", "time to fill, mean h"),
    ]
    fig = Figure(figsize=(12, 6), layout="constrained")
    axes = fig.subplots(2, 3)
    names = [p.value for p in by]
    for ax, (field, title) in zip(axes.flat, fields, strict=True):
        ax.bar(names, [float(getattr(m, field)) for m in by.values()], color=["C0", "C1", "C2"])
        ax.set_title(title)
    written.append(out / "metrics.png")
    fig.savefig(written[-1], dpi=110)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("::")[0])
    parser.add_argument("--weeks", type=float, default=2.0, help="measured weeks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/market"))
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)

    sc = standard_scenario(args.weeks)
    results = compare(sc, args.seed)
    runs = {p: run for p, (run, _) in results.items()}
    by = {p: m for p, (_, m) in results.items()}
    checks = claims(by)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(list(by.values()))
    title = (
        f"Standard scenario, {args.weeks:g} weeks, seed {args.seed}: "
        f"{len(sc.models)} models × {len(sc.regions)} regions, "
        f"{by[Policy.FIXED].requests} requests in the window."
    )
    lines = [f"- {'yes' if ok else 'NO'}: {text}" for text, ok in checks]
    (args.out / "market.md").write_text(f"{title}\n\n{table}\n\n" + "\n".join(lines) + "\n")
    written = plot(runs, by, args.out)

    if args.json:
        doc = {
            "weeks": args.weeks,
            "seed": args.seed,
            "metrics": [dataclasses.asdict(m) for m in by.values()],
            "claims": [{"claim": text, "holds": ok} for text, ok in checks],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(title, table, "", *lines, "", sep="\n")
        print("wrote", args.out / "market.md", *written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
