"""Device matching: which idle devices a cluster request gets, best first. Pure.

Plain values in, plain values out: the service builds a ``Candidate`` for each
hireable device and a ``Requirements`` from the request, and persists what it
picks. ``docs/matching.md`` states the rules for people.

Filters, in this order; ``Explain`` records how many candidates each one left::

    available   every candidate (one per device id: a later duplicate replaces an earlier)
    kind        ``kind`` is None, or the device's kind equals it
    model       ``model`` is None, or the device's catalog model equals it
    location    ``locations`` is empty, or holds the device's country (an unknown one never)
    tier        connectivity tier ≥ ``min_tier``
    supplier    ``suppliers`` is empty, or holds the device's owner
    exclude     the device id is not in ``exclude``
    reputation  reputation ≤ ``max_reputation`` (the requester's limit)

Ranking. ``score = reputation + 0.05 × tier + 0.01 × S / (S + price)`` with
``S = 10⁸`` (one whole token of an 8-decimal asset per hour). Reputation spans
the whole 0–1, a tier step is worth 0.05 of reputation and the price term at
most 0.01, so reputation weighs most, then tier, then a lower price. Higher is
better; equal scores go to the smaller device id, so a result never depends on
input order. The core cannot see list prices, so ``price`` is ranked as given
and 0 (the list price) ranks as the cheapest ask; a caller that wants explicit
asks compared with list prices passes the list price in their place.

Location. A request for ``q ≥ 2`` devices goes to one country when one can
fill it: among the countries with at least ``q`` admitted devices, the one
whose best ``q`` have the highest total score (``math.fsum``; a tie goes to
the smaller country code). When none can, it takes the best ``q`` devices
wherever they are, unknown locations included. A request for one device takes
the best device; a mega-ray request (``quantity=None``) takes every admitted
device. The chosen devices are listed best first. A request that cannot be
filled picks nothing: ``Match.devices`` is empty and ``Match.ok`` False, and
raising ``NoMatchingDevices`` is the caller's choice.

``match`` is the linear reference. ``MatchIndex`` (``core/match_index.py``) keeps
devices bucketed by (kind, model, location, tier), each bucket sorted by rank, so a
request visits only the buckets its filters admit; it returns exactly what ``match``
returns over the same devices, ``Explain`` included (every count is exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from idlegrid.errors import InvalidRequest

KINDS = frozenset({"gpu", "cpu", "apple"})
MAX_TIER = 4
TIER_WEIGHT = 0.05
PRICE_WEIGHT = 0.01
PRICE_SCALE = 100_000_000
STEPS = ("available", "kind", "model", "location", "tier", "supplier", "exclude", "reputation")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A device that could be hired now, as matching sees it."""

    device_id: str
    kind: str  # "gpu" | "cpu" | "apple"
    model: str  # catalog key
    location: str | None  # ISO 3166 alpha-2, None when unknown
    tier: int  # connectivity tier 0–4
    supplier: str  # the owner's public key
    processors: int  # GPUs in the device (CPU: 1)
    reputation: float  # 0–1, from device_reputation()
    price: int = 0  # ask per device-hour, smallest units (0 = list price); ranked as given

    def __post_init__(self) -> None:
        # Ranking sorts on these: a NaN or an out-of-range value would make the order
        # depend on the input order, so they are refused here.
        bad = (
            self.kind not in KINDS
            or not 0 <= self.tier <= MAX_TIER
            or not 0.0 <= self.reputation <= 1.0
            or self.price < 0
        )
        if bad:
            raise InvalidRequest(
                "a candidate needs a known kind, tier 0–4, reputation 0–1 and a price ≥ 0",
                device_id=self.device_id,
                kind=self.kind,
                tier=self.tier,
                reputation=self.reputation,
                price=self.price,
            )


@dataclass(frozen=True, slots=True)
class Requirements:
    """What a cluster request admits. Empty sets admit everything."""

    model: str | None = None
    kind: str | None = None
    quantity: int | None = 1  # None: every matching device (mega-ray)
    locations: frozenset[str] = frozenset()
    min_tier: int = 0
    suppliers: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()  # device ids never to pick
    max_reputation: float = 1.0  # the requester's limit (requester_limit)

    def __post_init__(self) -> None:
        if self.quantity is not None and (isinstance(self.quantity, bool) or self.quantity < 1):
            raise InvalidRequest("quantity must be at least 1, or None", quantity=self.quantity)
        if self.kind is not None and self.kind not in KINDS:
            raise InvalidRequest("kind must be gpu, cpu or apple", kind=self.kind)
        if not 0 <= self.min_tier <= MAX_TIER:
            raise InvalidRequest("min_tier must be 0–4", min_tier=self.min_tier)
        if not 0.0 <= self.max_reputation <= 1.0:
            raise InvalidRequest("max_reputation must be 0–1", max_reputation=self.max_reputation)
        for name in ("locations", "suppliers", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):  # frozenset("DE") would be {"D", "E"}
                raise InvalidRequest(f"{name} must be a set of strings", **{name: value})
            if not isinstance(value, frozenset):
                object.__setattr__(self, name, frozenset(value))


@dataclass(frozen=True, slots=True)
class Explain:
    """How many candidates were left after each filter, in ``STEPS`` order."""

    steps: tuple[tuple[str, int], ...]

    def as_dict(self) -> dict[str, int]:
        return dict(self.steps)


@dataclass(frozen=True, slots=True)
class Match:
    """The devices chosen, best first (empty when the request cannot be filled)."""

    devices: tuple[Candidate, ...]
    explain: Explain

    @property
    def ok(self) -> bool:
        """Found the quantity asked for (mega-ray: at least one device)."""
        return bool(self.devices)


def score(c: Candidate) -> float:
    """Higher is better: reputation, then 0.05 per tier, then up to 0.01 for a low price."""
    return (
        c.reputation + TIER_WEIGHT * c.tier + PRICE_WEIGHT * PRICE_SCALE / (PRICE_SCALE + c.price)
    )


def rank_key(c: Candidate) -> tuple[float, str]:
    """The sort key, ascending = best first: (−score, device_id)."""
    return (-score(c), c.device_id)


# The filters, in explain order after "available". Exclusion and reputation come last:
# MatchIndex (core/match_index.py) counts the first five from its buckets and these two
# per device or by bisection.
Filter = Callable[[Requirements, Candidate], bool]
FILTERS: tuple[tuple[str, Filter], ...] = (
    ("kind", lambda r, c: r.kind is None or c.kind == r.kind),
    ("model", lambda r, c: r.model is None or c.model == r.model),
    ("location", lambda r, c: not r.locations or c.location in r.locations),
    ("tier", lambda r, c: c.tier >= r.min_tier),
    ("supplier", lambda r, c: not r.suppliers or c.supplier in r.suppliers),
    ("exclude", lambda r, c: c.device_id not in r.exclude),
    ("reputation", lambda r, c: c.reputation <= r.max_reputation),
)


def match(candidates: Iterable[Candidate], req: Requirements) -> Match:
    """The reference: filter, rank, apply the location rule. Linear in the candidates."""
    pool = list({c.device_id: c for c in candidates}.values())
    steps = [("available", len(pool))]
    for name, keep in FILTERS:
        pool = [c for c in pool if keep(req, c)]
        steps.append((name, len(pool)))
    pool.sort(key=rank_key)
    return Match(_choose(pool, req.quantity), Explain(tuple(steps)))


def _choose(ranked: list[Candidate], quantity: int | None) -> tuple[Candidate, ...]:
    if quantity is None:
        return tuple(ranked)
    if len(ranked) < quantity:
        return ()
    if quantity > 1:
        by_location: dict[str, list[Candidate]] = {}
        for c in ranked:
            if c.location is not None:
                by_location.setdefault(c.location, []).append(c)
        best: tuple[float, list[Candidate]] | None = None
        for location in sorted(by_location):  # a tie keeps the smaller code
            top = by_location[location][:quantity]
            total = math.fsum(score(c) for c in top)
            if len(top) == quantity and (best is None or total > best[0]):
                best = (total, top)
        if best is not None:
            return tuple(best[1])
    return tuple(ranked[:quantity])


# -- reputation and standing -----------------------------------------------------------------

FAILURE_WEIGHT = 4
"""A failed proof of compute weighs as much against a device as four passes for it."""


def device_reputation(uptime_ratio: float, proofs_passed: int, proofs_failed: int) -> float:
    """0–1: ``uptime × (passed + 1) / (passed + 2 + 4 × failed)``.

    Uptime is clamped to 0–1. The proof factor is Laplace's rule of succession with a
    failure counted four times: 0.5 for a device with no history, 0.67 after one pass,
    0.91 after nine, 0.99 after 99; a single failure after 99 passes brings it to 0.95.
    """
    if math.isnan(uptime_ratio):
        raise InvalidRequest("uptime_ratio is not a number", uptime_ratio=uptime_ratio)
    if proofs_passed < 0 or proofs_failed < 0:
        raise InvalidRequest(
            "proof counts cannot be negative", passed=proofs_passed, failed=proofs_failed
        )
    uptime = min(1.0, max(0.0, uptime_ratio))
    proofs = (proofs_passed + 1) / (proofs_passed + 2 + FAILURE_WEIGHT * proofs_failed)
    return uptime * proofs


@dataclass(frozen=True, slots=True)
class Standing:
    """A requester's own record."""

    payments: int  # rentals paid
    unpaid: int  # bills left unpaid
    early_terminations: int
    abuse_reports: int  # upheld reports against the requester

    def __post_init__(self) -> None:
        counts = (self.payments, self.unpaid, self.early_terminations, self.abuse_reports)
        if any(n < 0 for n in counts):
            raise InvalidRequest("standing counts cannot be negative", counts=list(counts))


REQUESTER_LIMITS: tuple[tuple[int, float], ...] = ((6, 0.7), (3, 0.8), (1, 0.9), (0, 1.0))
"""(strikes at least, max_reputation): the first row that applies."""


def requester_limit(s: Standing) -> float:
    """The highest device reputation a requester may hire.

    Strikes are unpaid bills plus abuse reports: none → 1.0, 1–2 → 0.9, 3–5 → 0.8,
    6 or more → 0.7. Paid rentals do not cancel strikes, and early terminations are
    no strike: every rental is prepaid and a termination refunds only unused time.
    """
    strikes = s.unpaid + s.abuse_reports
    return next(limit for floor, limit in REQUESTER_LIMITS if strikes >= floor)
