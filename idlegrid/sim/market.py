"""A market simulator: which pricing policy serves buyers and providers best.

Time runs in whole hours. The market is a set of **pools**, one per hardware model and
region; a request asks for one pool and a pool's price depends only on that pool.

- **Supply**: devices join each pool as a Poisson stream and stay online for an
  exponential time (``lifetime_h``); a device whose time is up while hired finishes the
  job first. Each device has a provider floor, uniform in ``floor_range`` × list price.
- **Demand**: requests arrive as a Poisson stream whose rate follows the region's local
  day (a cosine peaking at ``peak_local_hour``) and is lower at weekends. Each has a size,
  a duration, an urgency and a budget (the most it pays per device-hour, lognormal around
  the list price). An urgent buyer tries once; a flexible one retries every hour until its
  patience runs out. A buyer takes an offer only when the price is within its budget.
- **Policies**: ``fixed`` charges the list price (``core.clusters.list_price_usd``);
  ``dynamic`` charges ``core.pricing.price`` for the pool's live ``Market``, the request's
  urgency, size and duration and the highest floor among the devices it takes; ``auction``
  clears the idle devices' floors against the budget with ``core.pricing.auction_clear``.
  Every policy takes the idle devices with the lowest floors; none matches a device below
  its floor.

``generate`` draws one world (devices and requests) from a seed; ``simulate`` plays it
under one policy, so every policy meets the same supply and the same buyers. Nothing
reads a clock. Only requests that arrive inside the measured window (after ``warmup_h``,
for ``weeks``) count; the run goes on for the longest patience so all of them end.

What it leaves out, on purpose: providers do not join or leave because of the price (a
surge draws no extra supply), buyers' budgets do not depend on their urgency, a buyer
asks for one pool only, and buyers do not compete in the auction (the asks do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from idlegrid.catalog import load_catalog
from idlegrid.core.clusters import list_price_usd
from idlegrid.core.pricing import Ask, Market, PriceRequest, Urgency, auction_clear, price

MICRO = 1_000_000  # USDC's smallest units per USD: every price here is in them
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Policy(StrEnum):
    FIXED = "fixed"
    DYNAMIC = "dynamic"
    AUCTION = "auction"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    key: str  # a catalog key
    devices: float  # mean devices online in a region of supply weight 1
    load: float  # offered device-hours per device-hour of that supply, on an average hour


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    utc_offset_h: int
    supply: float  # scales every model's devices here
    demand: float  # scales every model's demand here


@dataclass(frozen=True, slots=True)
class Scenario:
    models: tuple[ModelSpec, ...]
    regions: tuple[Region, ...]
    weeks: float = 2.0
    warmup_h: int = 24
    lifetime_h: float = 96.0
    daily_amplitude: float = 0.6
    peak_local_hour: int = 15
    weekend_factor: float = 0.7
    sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    size_weights: tuple[float, ...] = (0.40, 0.25, 0.18, 0.12, 0.05)
    duration_median_h: float = 6.0
    duration_sigma: float = 1.0
    max_duration_h: int = 120
    urgent_share: float = 0.5
    patience_h: tuple[int, int] = (12, 48)
    budget_median: float = 1.15  # × list price
    budget_sigma: float = 0.35
    floor_range: tuple[float, float] = (0.5, 1.0)  # × list price

    @property
    def window_h(self) -> int:
        return round(self.weeks * 168)

    @property
    def horizon_h(self) -> int:
        return self.warmup_h + self.window_h + self.patience_h[1]


def standard_scenario(weeks: float = 2.0) -> Scenario:
    """Five models in four regions; Asia is short of supply, Latin America is small."""
    models = (
        ModelSpec("h100-sxm-80gb", devices=24, load=0.9),
        ModelSpec("a100-80gb", devices=32, load=0.8),
        ModelSpec("l40s", devices=24, load=0.7),
        ModelSpec("rtx-4090", devices=60, load=0.6),
        ModelSpec("cpu-amd-epyc", devices=40, load=0.5),
    )
    regions = (
        Region("us", -5, supply=1.0, demand=1.0),
        Region("eu", 1, supply=0.8, demand=0.9),
        Region("asia", 8, supply=0.6, demand=0.8),
        Region("latam", -3, supply=0.3, demand=0.3),
    )
    return Scenario(models, regions, weeks=weeks)


@dataclass(frozen=True, slots=True)
class Pool:
    model: str
    region: str
    list_usd: Decimal


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    id: int
    pool: int
    joins: int  # hour
    leaves: int  # hour its provider takes it off, unless a job still runs
    floor: int  # µUSD per device-hour


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    arrives: int  # hour
    pool: int
    devices: int
    hours: int
    urgent: bool
    patience_h: int  # 0 when urgent
    budget: int  # µUSD per device-hour


@dataclass(frozen=True, slots=True)
class World:
    scenario: Scenario
    seed: int
    pools: tuple[Pool, ...]
    devices: tuple[DeviceSpec, ...]
    requests: tuple[Request, ...]


def _demand_shape(sc: Scenario, region: Region, hours: int) -> FloatArray:
    """The demand rate's multiplier, hour by hour, on the region's local clock."""
    local = np.arange(hours) + region.utc_offset_h
    day = 1 + sc.daily_amplitude * np.cos(2 * np.pi * ((local % 24) - sc.peak_local_hour) / 24)
    weekend = np.where((local // 24) % 7 >= 5, sc.weekend_factor, 1.0)
    return np.asarray(day * weekend, dtype=np.float64)


def generate(sc: Scenario, seed: int) -> World:
    """Draw the devices and requests of one world; the same seed gives the same world."""
    rng = np.random.default_rng(seed)
    catalog = load_catalog()
    horizon = sc.horizon_h
    weights = np.asarray(sc.size_weights) / sum(sc.size_weights)
    mean_size = float(np.dot(weights, sc.sizes))
    mean_hours = sc.duration_median_h * math.exp(sc.duration_sigma**2 / 2)
    pools: list[Pool] = []
    devices: list[DeviceSpec] = []
    raw: list[tuple[int, int, int, int, bool, int, int]] = []
    for spec in sc.models:
        hw = catalog.get(spec.key)
        list_usd = list_price_usd(hw.multiplier, 1, hw.kind.value)
        list_units = int(list_usd * MICRO)
        for region in sc.regions:
            p = len(pools)
            pools.append(Pool(spec.key, region.name, list_usd))
            mean_n = spec.devices * region.supply
            joins = [0] * int(rng.poisson(mean_n))  # the market starts in its steady state
            for t, k in enumerate(rng.poisson(mean_n / sc.lifetime_h, horizon)):
                joins += [t] * int(k)
            stays = np.ceil(rng.exponential(sc.lifetime_h, len(joins))).astype(np.int64)
            floors = rng.uniform(*sc.floor_range, len(joins)) * list_units
            for t0, stay, floor in zip(joins, stays, floors, strict=True):
                devices.append(DeviceSpec(len(devices), p, t0, t0 + int(stay), int(floor)))
            rate = spec.load * spec.devices * region.demand / (mean_size * mean_hours)
            counts = rng.poisson(rate * _demand_shape(sc, region, horizon))
            n = int(counts.sum())
            arrives = np.repeat(np.arange(horizon), counts)
            sizes = rng.choice(np.asarray(sc.sizes), n, p=weights)
            hours = np.ceil(rng.lognormal(math.log(sc.duration_median_h), sc.duration_sigma, n))
            hours = np.clip(hours, 1, sc.max_duration_h)
            urgent = rng.random(n) < sc.urgent_share
            patience = rng.integers(sc.patience_h[0], sc.patience_h[1] + 1, n)
            budgets = rng.lognormal(math.log(sc.budget_median), sc.budget_sigma, n) * list_units
            for i in range(n):
                wait = 0 if urgent[i] else int(patience[i])
                budget = max(1, int(budgets[i]))
                raw.append(
                    (
                        int(arrives[i]),
                        p,
                        int(sizes[i]),
                        int(hours[i]),
                        bool(urgent[i]),
                        wait,
                        budget,
                    )
                )
    raw.sort(key=lambda r: (r[0], r[1]))  # stable: draw order within an hour and pool
    requests = tuple(Request(i, *r) for i, r in enumerate(raw))
    return World(sc, seed, tuple(pools), tuple(devices), requests)


@dataclass(frozen=True, slots=True)
class Trade:
    request: int
    hour: int  # the job runs [hour, hour + request.hours)
    price: int  # µUSD per device-hour
    devices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Run:
    policy: Policy
    world: World
    trades: tuple[Trade, ...]
    online: IntArray  # [hour, pool] devices online
    hired: IntArray  # [hour, pool] devices hired
    outcome: tuple[str, ...]  # per request: "filled", or why it left: "price" or "supply"


@dataclass(slots=True)
class _Live:
    spec: DeviceSpec
    ask: Ask
    busy_until: int = 0


@lru_cache(maxsize=1 << 16)
def _dynamic_units(
    list_usd: Decimal, devices: int, hours: int, idle: int, hired: int, urgent: bool, floor: int
) -> int:
    req = PriceRequest(
        base_usd=list_usd,
        devices=devices,
        hours=hours,
        market=Market(idle=idle, hired=hired),
        urgency=Urgency.NOW if urgent else Urgency.FLEXIBLE,
    )
    return price(req, "USDC", Decimal(1), floor_usd=Decimal(floor) / MICRO).per_device_hour


def _offer(policy: Policy, pool: Pool, r: Request, idle: list[_Live], hired: int) -> int | str:
    """The price per device-hour the buyer pays for ``idle[:r.devices]``, or why not."""
    if len(idle) < r.devices:
        return "supply"
    highest_floor = idle[r.devices - 1].spec.floor
    if policy is Policy.FIXED:
        units = int(pool.list_usd * MICRO)
        if highest_floor > units:
            return "supply"  # the rest of the idle devices' floors are above the list price
    elif policy is Policy.DYNAMIC:
        units = _dynamic_units(
            pool.list_usd, r.devices, r.hours, len(idle), hired, r.urgent, highest_floor
        )
    else:
        cleared = auction_clear([d.ask for d in idle], r.devices, Decimal(r.budget) / MICRO)
        if cleared is None:
            return "price"
        taken, clearing = cleared
        # The lowest asks are the idle list's head: the same devices every policy takes.
        if [a.device_id for a in taken] != [d.ask.device_id for d in idle[: r.devices]]:
            raise RuntimeError("auction_clear took other devices than the lowest floors")
        units = int(clearing * MICRO)
    return units if units <= r.budget else "price"


def simulate(world: World, policy: Policy) -> Run:
    """Play ``world`` hour by hour under ``policy``; buyers are served in arrival order."""
    horizon, n_pools = world.scenario.horizon_h, len(world.pools)
    joining: list[list[DeviceSpec]] = [[] for _ in range(horizon)]
    for spec in world.devices:
        joining[spec.joins].append(spec)
    arriving: list[list[Request]] = [[] for _ in range(horizon)]
    for r in world.requests:
        arriving[r.arrives].append(r)
    live: list[list[_Live]] = [[] for _ in range(n_pools)]
    queues: list[list[Request]] = [[] for _ in range(n_pools)]
    online = np.zeros((horizon, n_pools), dtype=np.int64)
    hired = np.zeros((horizon, n_pools), dtype=np.int64)
    outcome = ["open"] * len(world.requests)
    trades: list[Trade] = []
    for t in range(horizon):
        for spec in joining[t]:
            ask = Ask(f"d{spec.id:08d}", Decimal(spec.floor) / MICRO)
            live[spec.pool].append(_Live(spec, ask))
        for r in arriving[t]:
            queues[r.pool].append(r)
        for p, pool in enumerate(world.pools):
            devs = [d for d in live[p] if d.spec.leaves > t or d.busy_until > t]
            live[p] = devs
            idle = [d for d in devs if d.busy_until <= t]
            idle.sort(key=lambda d: (d.spec.floor, d.spec.id))  # auction_clear's order
            busy = len(devs) - len(idle)
            waiting: list[Request] = []
            for r in queues[p]:
                offer = _offer(policy, pool, r, idle, busy)
                if isinstance(offer, str):
                    if r.urgent or t - r.arrives >= r.patience_h:
                        outcome[r.id] = offer
                    else:
                        waiting.append(r)
                    continue
                taken, idle = idle[: r.devices], idle[r.devices :]
                for d in taken:
                    if d.busy_until > t:  # the invariant every policy must keep
                        raise RuntimeError(f"device {d.spec.id} hired twice at hour {t}")
                    d.busy_until = t + r.hours
                busy += r.devices
                outcome[r.id] = "filled"
                trades.append(Trade(r.id, t, offer, tuple(d.spec.id for d in taken)))
            queues[p] = waiting
            online[t, p], hired[t, p] = len(devs), busy
    return Run(policy, world, tuple(trades), online, hired, tuple(outcome))


@dataclass(frozen=True, slots=True)
class Metrics:
    """One policy over the measured window. Prices are USD per device-hour."""

    policy: str
    requests: int  # arrived in the window
    fill_rate: float  # served ÷ arrived
    utilisation: float  # device-hours hired ÷ device-hours online
    buyer_cost_usd: float  # paid ÷ device-hours bought
    cost_vs_list: float  # paid ÷ the same device-hours at list price
    revenue_usd: float  # paid to providers, before fees
    volatility: float  # mean |hour-to-hour change| ÷ mean, of each pool's hourly price
    price_cv: float  # standard deviation ÷ mean of each pool's hourly price
    fill_mean_h: float  # hours from arrival to start, served requests
    fill_p90_h: float
    left_price: float  # share of requests that left because the price was over budget
    left_supply: float  # ... because too few devices were idle (at or under the price)


def pool_hour_prices(run: Run) -> tuple[FloatArray, FloatArray]:
    """(µUSD paid, device-hours sold) per [hour, pool], at the hour each trade starts."""
    shape = run.online.shape
    paid, volume = np.zeros(shape), np.zeros(shape)
    for tr in run.trades:
        r = run.world.requests[tr.request]
        paid[tr.hour, r.pool] += tr.price * r.devices * r.hours
        volume[tr.hour, r.pool] += r.devices * r.hours
    return paid, volume


def _spread(paid: FloatArray, volume: FloatArray) -> tuple[float, float]:
    """Volatility and CV of each pool's hourly mean price (hours with trades), pooled."""
    moves = jumps = cv_sum = cv_n = 0.0
    for p in range(paid.shape[1]):
        sold = volume[:, p] > 0
        prices = paid[sold, p] / volume[sold, p]
        if len(prices) < 2:
            continue
        mean = float(prices.mean())
        moves += float(np.abs(np.diff(prices)).sum()) / mean
        jumps += len(prices) - 1
        cv_sum += float(prices.std()) / mean * len(prices)
        cv_n += len(prices)
    return (moves / jumps if jumps else 0.0), (cv_sum / cv_n if cv_n else 0.0)


def measure(run: Run) -> Metrics:
    sc = run.world.scenario
    start, end = sc.warmup_h, sc.warmup_h + sc.window_h
    counted = [r for r in run.world.requests if start <= r.arrives < end]
    n = max(1, len(counted))
    trades = [tr for tr in run.trades if start <= run.world.requests[tr.request].arrives < end]
    paid = listed = device_hours = 0.0
    waits: list[int] = []
    for tr in trades:
        r = run.world.requests[tr.request]
        paid += tr.price * r.devices * r.hours / MICRO
        listed += float(run.world.pools[r.pool].list_usd) * r.devices * r.hours
        device_hours += r.devices * r.hours
        waits.append(tr.hour - r.arrives)
    hour_paid, hour_volume = pool_hour_prices(run)
    volatility, cv = _spread(hour_paid[start:end], hour_volume[start:end])
    online = int(run.online[start:end].sum())
    left = [run.outcome[r.id] for r in counted]
    return Metrics(
        policy=run.policy.value,
        requests=len(counted),
        fill_rate=len(trades) / n,
        utilisation=int(run.hired[start:end].sum()) / online if online else 0.0,
        buyer_cost_usd=paid / device_hours if device_hours else 0.0,
        cost_vs_list=paid / listed if listed else 0.0,
        revenue_usd=paid,
        volatility=volatility,
        price_cv=cv,
        fill_mean_h=float(np.mean(waits)) if waits else 0.0,
        fill_p90_h=float(np.percentile(waits, 90)) if waits else 0.0,
        left_price=left.count("price") / n,
        left_supply=left.count("supply") / n,
    )


def compare(sc: Scenario, seed: int) -> dict[Policy, tuple[Run, Metrics]]:
    """Every policy over the same world."""
    world = generate(sc, seed)
    runs = {policy: simulate(world, policy) for policy in Policy}
    return {policy: (run, measure(run)) for policy, run in runs.items()}
