"""Pure-core tests: device matching (filters, explain, ranking, the location rule),
``MatchIndex`` against the linear reference, device reputation and requester standing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idlegrid.core import match_index
from idlegrid.core.match_index import MatchIndex
from idlegrid.core.matching import (
    STEPS,
    Candidate,
    Match,
    Requirements,
    Standing,
    device_reputation,
    match,
    requester_limit,
    score,
)
from idlegrid.errors import InvalidRequest


def dev(device_id: str, **fields: Any) -> Candidate:
    base: dict[str, Any] = {
        "kind": "gpu",
        "model": "h100-sxm-80gb",
        "location": "DE",
        "tier": 3,
        "supplier": "alice",
        "processors": 8,
        "reputation": 0.9,
    }
    return Candidate(device_id=device_id, **(base | fields))


def ids(m: Match) -> list[str]:
    return [c.device_id for c in m.devices]


def both(candidates: list[Candidate], req: Requirements) -> Match:
    """The reference's answer, after checking that the index gives the same."""
    want = match(candidates, req)
    assert MatchIndex(candidates).match(req) == want
    return want


# Ranking -----------------------------------------------------------------------------------


def test_score_weighs_reputation_then_tier_then_price() -> None:
    assert score(dev("a", reputation=0.95, tier=1)) > score(dev("b", reputation=0.70, tier=4))
    assert score(dev("a", tier=4)) > score(dev("b", tier=3, price=0))
    assert score(dev("a", price=1)) > score(dev("b", price=2))
    assert score(dev("a", reputation=0.91, price=10**12)) > score(dev("b", reputation=0.9))
    top = dev("a", reputation=1.0, tier=4, price=0)
    assert score(top) == pytest.approx(1.0 + 0.2 + 0.01)


def test_equal_scores_go_to_the_smaller_id() -> None:
    fleet = [dev("c"), dev("a"), dev("b")]
    assert ids(both(fleet, Requirements(quantity=3))) == ["a", "b", "c"]
    assert ids(both(fleet[::-1], Requirements(quantity=2))) == ["a", "b"]


# Filters and explain -----------------------------------------------------------------------

FLEET = [
    dev("h1", reputation=0.99),
    dev("h2", reputation=0.95, location="US"),
    dev("h3", reputation=0.80, tier=1),
    dev("h4", reputation=0.85, supplier="bob"),
    dev("a1", model="a100-80gb", reputation=0.97),
    dev("m1", kind="apple", model="apple-m4-max", processors=1, location=None),
    dev("c1", kind="cpu", model="cpu-amd-epyc", processors=1, reputation=0.6),
]


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (Requirements(kind="cpu"), ["c1"]),
        (Requirements(kind="apple"), ["m1"]),
        (Requirements(model="a100-80gb"), ["a1"]),
        (Requirements(model="a100-80gb", kind="cpu"), []),
        (Requirements(model="h100-sxm-80gb", quantity=None, locations=frozenset({"US"})), ["h2"]),
        (Requirements(kind="apple", locations=frozenset({"DE"})), []),  # unknown ≠ anywhere
        (Requirements(model="h100-sxm-80gb", quantity=None, min_tier=3), ["h1", "h2", "h4"]),
        (Requirements(quantity=None, suppliers=frozenset({"bob"})), ["h4"]),
        (Requirements(model="h100-sxm-80gb", exclude=frozenset({"h1", "h2"})), ["h4"]),
        (Requirements(model="h100-sxm-80gb", max_reputation=0.9), ["h4"]),
    ],
)
def test_each_filter(req: Requirements, expected: list[str]) -> None:
    found = both(FLEET, req)
    assert ids(found) == expected
    assert found.ok is bool(expected)


def test_explain_counts_every_filter_in_order() -> None:
    req = Requirements(
        kind="gpu",
        model="h100-sxm-80gb",
        quantity=None,
        locations=frozenset({"DE"}),
        min_tier=2,
        suppliers=frozenset({"alice"}),
        exclude=frozenset({"h1", "zz"}),
        max_reputation=0.99,
    )
    fleet = [*FLEET, dev("h5", reputation=0.92), dev("h6", reputation=1.0)]
    found = both(fleet, req)
    assert found.explain.steps == (
        ("available", 9),
        ("kind", 7),  # not m1, c1
        ("model", 6),  # not a1
        ("location", 5),  # not h2 (US)
        ("tier", 4),  # not h3 (tier 1)
        ("supplier", 3),  # not h4 (bob)
        ("exclude", 2),  # not h1; "zz" is no device
        ("reputation", 1),  # not h6 (1.0 > 0.99)
    )
    assert [name for name, _ in found.explain.steps] == list(STEPS)
    assert found.explain.as_dict()["reputation"] == 1
    assert ids(found) == ["h5"]


def test_exclusion_counts_only_devices_the_earlier_filters_admitted() -> None:
    req = Requirements(model="h100-sxm-80gb", quantity=None, exclude=frozenset({"c1", "a1"}))
    steps = both(FLEET, req).explain.as_dict()
    assert steps["supplier"] == steps["exclude"] == 4


def test_a_request_that_cannot_be_filled_picks_nothing_but_explains() -> None:
    found = both(FLEET, Requirements(model="h100-sxm-80gb", quantity=5))
    assert found.devices == () and not found.ok
    assert found.explain.as_dict()["reputation"] == 4
    empty = both([], Requirements(quantity=None))
    assert not empty.ok and empty.explain.steps == tuple((s, 0) for s in STEPS)


def test_mega_ray_takes_every_match_best_first_across_locations() -> None:
    found = both(FLEET, Requirements(kind="gpu", quantity=None))
    assert ids(found) == ["h1", "a1", "h2", "h4", "h3"]
    assert found.ok
    assert not both(FLEET, Requirements(kind="gpu", quantity=None, min_tier=4)).ok


def test_max_reputation_keeps_the_most_trusted_devices_for_good_standing() -> None:
    fleet = [dev("top", reputation=0.97), dev("edge", reputation=0.9), dev("low", reputation=0.5)]
    assert ids(both(fleet, Requirements(quantity=None))) == ["top", "edge", "low"]
    poor = Requirements(quantity=None, max_reputation=0.9)
    assert ids(both(fleet, poor)) == ["edge", "low"]  # the limit itself is allowed
    assert both(fleet, Requirements(quantity=3, max_reputation=0.9)).devices == ()


def test_duplicate_ids_keep_the_last() -> None:
    fleet = [dev("x", reputation=0.1), dev("y", reputation=0.5), dev("x", reputation=0.9)]
    found = both(fleet, Requirements(quantity=None))
    assert [(c.device_id, c.reputation) for c in found.devices] == [("x", 0.9), ("y", 0.5)]
    assert found.explain.as_dict()["available"] == 2


# The location rule -------------------------------------------------------------------------


def test_one_country_that_can_fill_the_request_wins_over_better_devices_elsewhere() -> None:
    fleet = [
        dev("de1", reputation=0.99),
        dev("fr1", reputation=0.98, location="FR"),
        dev("us1", reputation=0.90, location="US"),
        dev("us2", reputation=0.89, location="US"),
        dev("us3", reputation=0.88, location="US"),
    ]
    assert ids(both(fleet, Requirements(quantity=3))) == ["us1", "us2", "us3"]
    # one device: simply the best
    assert ids(both(fleet, Requirements(quantity=1))) == ["de1"]
    # no country holds four: the best four wherever they are
    assert ids(both(fleet, Requirements(quantity=4))) == ["de1", "fr1", "us1", "us2"]


def test_the_country_with_the_best_total_wins() -> None:
    fleet = [
        dev("de1", reputation=0.99),
        dev("de2", reputation=0.60),
        dev("us1", reputation=0.90, location="US"),
        dev("us2", reputation=0.89, location="US"),
    ]
    # DE holds the best device, but US's pair scores more in total
    assert ids(both(fleet, Requirements(quantity=2))) == ["us1", "us2"]


def test_a_tie_between_countries_goes_to_the_smaller_code() -> None:
    fleet = [dev(f"{loc}{i}", location=loc, reputation=0.8) for loc in ("US", "DE") for i in (1, 2)]
    assert ids(both(fleet, Requirements(quantity=2))) == ["DE1", "DE2"]


def test_unknown_locations_form_no_group() -> None:
    fleet = [
        dev("n1", location=None, reputation=0.99),
        dev("n2", location=None, reputation=0.98),
        dev("de1", reputation=0.50),
        dev("de2", reputation=0.40),
    ]
    assert ids(both(fleet, Requirements(quantity=2))) == ["de1", "de2"]
    assert ids(both(fleet, Requirements(quantity=3))) == ["n1", "n2", "de1"]
    assert ids(both(fleet, Requirements(quantity=1))) == ["n1"]


def test_the_location_filter_narrows_before_the_location_rule() -> None:
    fleet = [dev("de1", reputation=0.99), dev("us1", location="US"), dev("us2", location="US")]
    req = Requirements(quantity=2, locations=frozenset({"DE", "US"}))
    assert ids(both(fleet, req)) == ["us1", "us2"]


# MatchIndex ----------------------------------------------------------------------------------


def test_take_never_returns_a_device_twice() -> None:
    fleet = [dev(f"d{i:02}", reputation=i / 40, location=("DE", "US")[i % 2]) for i in range(40)]
    index = MatchIndex(fleet)
    seen: list[str] = []
    while (found := index.take(Requirements(quantity=3))).ok:
        seen += ids(found)
        assert not set(ids(found)) & set(ids(index.match(Requirements(quantity=None))))
    assert len(seen) == len(set(seen)) == 39  # 40 devices, 13 takes of 3
    assert len(index) == 1
    assert index.take(Requirements(quantity=None)).ok and len(index) == 0


def test_add_replaces_and_remove_forgets() -> None:
    index = MatchIndex([dev("a", reputation=0.5), dev("b", reputation=0.6)])
    index.add(dev("a", reputation=0.9, location="US"))
    assert len(index) == 2 and "a" in index
    assert ids(index.match(Requirements(quantity=None))) == ["a", "b"]
    assert ids(index.match(Requirements(locations=frozenset({"DE"})))) == ["b"]
    index.remove("a")
    index.remove("a")  # absent: nothing happens
    assert ids(index.match(Requirements(quantity=None))) == ["b"]
    index.remove("b")
    assert len(index) == 0 and not index.match(Requirements()).ok
    index.add(dev("c"))
    assert [c.device_id for c in index] == ["c"]


# Index and reference agree on random fleets --------------------------------------------------

IDS = [f"d{i}" for i in range(40)]
MODELS = {"gpu": ["h100", "a100", "4090"], "cpu": ["epyc"], "apple": ["m4"]}
COUNTRIES = ["DE", "US", "FR"]
SUPPLIERS = ["s1", "s2", "s3"]
REPUTATIONS = [0.0, 0.5, 0.85, 0.89, 0.9, 0.9000001, 0.905, 0.91, 0.95, 1.0]  # ties, near limits
LIMITS = [0.9, 0.905, 0.5]


@st.composite
def candidates(draw: st.DrawFn) -> Candidate:
    kind = draw(st.sampled_from(["gpu", "gpu", "gpu", "cpu", "apple"]))
    return Candidate(
        device_id=draw(st.sampled_from(IDS)),
        kind=kind,
        model=draw(st.sampled_from(MODELS[kind])),
        location=draw(st.sampled_from([*COUNTRIES, None])),
        tier=draw(st.sampled_from([0, 1, 2, 3, 3, 4, 4])),
        supplier=draw(st.sampled_from(SUPPLIERS)),
        processors=draw(st.sampled_from([1, 8])),
        # mostly a few values, so that scores tie and sums of scores tie
        reputation=draw(
            st.sampled_from(REPUTATIONS) | st.sampled_from([0.9, 0.95]) | st.floats(0, 1)
        ),
        price=draw(st.sampled_from([0, 0, 1, 10**8]) | st.integers(0, 10**10)),
    )


def sometimes(draw: st.DrawFn) -> bool:
    """A filter is set in about a third of requests, so most requests match something."""
    return draw(st.integers(0, 2)) == 0


@st.composite
def requirements(draw: st.DrawFn) -> Requirements:
    kind = draw(st.sampled_from(sorted(MODELS))) if sometimes(draw) else None
    models = MODELS[kind] if kind else [m for ms in MODELS.values() for m in ms]
    some = st.frozensets
    return Requirements(
        model=draw(st.sampled_from(models)) if sometimes(draw) else None,
        kind=kind,
        quantity=draw(st.sampled_from([None, 1, 2, 2, 3, 4, 6])),
        locations=draw(some(st.sampled_from(COUNTRIES), max_size=2))
        if sometimes(draw)
        else frozenset(),
        min_tier=draw(st.integers(1, 4)) if sometimes(draw) else 0,
        suppliers=draw(some(st.sampled_from(SUPPLIERS), max_size=2))
        if sometimes(draw)
        else frozenset(),
        exclude=draw(some(st.sampled_from([*IDS, "absent"]), max_size=8)),
        max_reputation=draw(st.sampled_from(LIMITS) | st.floats(0, 1)) if sometimes(draw) else 1.0,
    )


# A supplier's model-blind tree normally waits for 512 devices; 2 and 4 make the small
# fleets here build it and drop it again.
BLIND_FROM = st.sampled_from([2, 4, match_index.SUPPLIER_BLIND_FROM])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(candidates(), min_size=8, max_size=40),
    st.lists(requirements(), min_size=1, max_size=4),
    BLIND_FROM,
)
def test_index_matches_the_reference(
    fleet: list[Candidate], reqs: list[Requirements], blind_from: int
) -> None:
    with patch.object(match_index, "SUPPLIER_BLIND_FROM", blind_from):
        index = MatchIndex(fleet)
    for req in reqs:
        assert index.match(req) == match(fleet, req)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(candidates(), min_size=4, max_size=30),
    st.lists(requirements(), min_size=1, max_size=4),
    st.frozensets(st.sampled_from([*IDS, "absent"]), max_size=10),
)
def test_hidden_devices_are_as_if_absent(
    fleet: list[Candidate], reqs: list[Requirements], hidden: frozenset[str]
) -> None:
    """``match(req, hidden)`` answers as the reference does without those devices."""
    index = MatchIndex(fleet)
    rest = [c for c in {c.device_id: c for c in fleet}.values() if c.device_id not in hidden]
    for req in reqs:
        assert index.match(req, hidden) == match(rest, req)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(candidates(), min_size=2, max_size=15),
    st.permutations(COUNTRIES),
    st.lists(requirements(), min_size=1, max_size=4),
)
def test_index_matches_the_reference_when_countries_tie(
    fleet: list[Candidate], countries: list[str], reqs: list[Requirements]
) -> None:
    """The same devices in two countries: equal totals, so the tie rule decides."""
    a, b = countries[:2]
    fleet = [replace(c, location=a) for c in fleet] + [
        replace(c, device_id=f"{c.device_id}*", location=b) for c in fleet
    ]
    index = MatchIndex(fleet)
    for req in reqs:
        assert index.match(req) == match(fleet, req)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(candidates(), max_size=20),
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), candidates()),
            st.tuples(st.just("remove"), st.sampled_from(IDS)),
            st.tuples(st.just("take"), requirements()),
        ),
        max_size=25,
    ),
    requirements(),
    BLIND_FROM,
)
def test_index_stays_equal_to_the_reference_through_changes(
    fleet: list[Candidate], ops: list[tuple[str, Any]], probe: Requirements, blind_from: int
) -> None:
    with patch.object(match_index, "SUPPLIER_BLIND_FROM", blind_from):
        index = MatchIndex(fleet)
        _index_stays_equal(index, fleet, ops, probe)


def _index_stays_equal(
    index: MatchIndex, fleet: list[Candidate], ops: list[tuple[str, Any]], probe: Requirements
) -> None:
    live = {c.device_id: c for c in fleet}
    taken: set[str] = set()
    for op, arg in ops:
        if op == "add":
            index.add(arg)
            live[arg.device_id] = arg
            taken.discard(arg.device_id)  # back on offer
        elif op == "remove":
            index.remove(arg)
            live.pop(arg, None)
        else:
            want = match(live.values(), arg)
            assert index.take(arg) == want
            assert not taken & set(ids(want))  # reserved devices are never offered again
            taken.update(ids(want))
            for c in want.devices:
                del live[c.device_id]
        assert len(index) == len(live)
        assert index.match(probe) == match(live.values(), probe)


# Validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "GPU"},
        {"tier": 5},
        {"tier": -1},
        {"reputation": 1.01},
        {"reputation": float("nan")},
        {"price": -1},
    ],
)
def test_candidate_refuses_values_ranking_cannot_order(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        dev("x", **fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"quantity": 0},
        {"quantity": True},
        {"min_tier": 5},
        {"max_reputation": 1.5},
        {"max_reputation": float("nan")},
        {"locations": "DE"},
        {"kind": "GPU"},
    ],
)
def test_requirements_refuse_nonsense(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        Requirements(**fields)


def test_requirements_take_any_iterable_of_strings() -> None:
    req = Requirements(locations=["DE", "US"], exclude={"a"})  # type: ignore[arg-type]
    assert req.locations == frozenset({"DE", "US"}) and req.exclude == frozenset({"a"})
    assert replace(req, quantity=None).quantity is None


# Device reputation and requester standing ----------------------------------------------------


def test_device_reputation_formula() -> None:
    assert device_reputation(1.0, 0, 0) == 0.5
    assert device_reputation(1.0, 1, 0) == pytest.approx(2 / 3)
    assert device_reputation(1.0, 9, 0) == pytest.approx(10 / 11)
    assert device_reputation(1.0, 99, 0) == pytest.approx(100 / 101)
    assert device_reputation(1.0, 99, 1) == pytest.approx(100 / 105)
    assert device_reputation(0.5, 99, 0) == pytest.approx(50 / 101)
    assert device_reputation(1.7, 0, 0) == 0.5 and device_reputation(-1.0, 5, 0) == 0.0
    assert device_reputation(1.0, 0, 1) < device_reputation(1.0, 0, 0)


@given(st.floats(0, 1), st.integers(0, 10**6), st.integers(0, 10**6))
def test_device_reputation_is_within_bounds_and_monotone(up: float, ok: int, bad: int) -> None:
    r = device_reputation(up, ok, bad)
    assert 0.0 <= r <= 1.0
    assert device_reputation(up, ok + 1, bad) >= r >= device_reputation(up, ok, bad + 1)


@pytest.mark.parametrize("args", [(float("nan"), 0, 0), (1.0, -1, 0), (1.0, 0, -1)])
def test_device_reputation_refuses_nonsense(args: tuple[float, int, int]) -> None:
    with pytest.raises(InvalidRequest):
        device_reputation(*args)


@pytest.mark.parametrize(
    ("unpaid", "abuse", "limit"),
    [(0, 0, 1.0), (1, 0, 0.9), (0, 2, 0.9), (1, 2, 0.8), (0, 5, 0.8), (3, 3, 0.7), (0, 40, 0.7)],
)
def test_requester_limit_falls_with_strikes(unpaid: int, abuse: int, limit: float) -> None:
    assert requester_limit(Standing(100, unpaid, 0, abuse)) == limit


def test_payments_and_early_terminations_are_no_strike() -> None:
    assert (
        requester_limit(Standing(payments=0, unpaid=0, early_terminations=50, abuse_reports=0)) == 1
    )
    assert requester_limit(Standing(10_000, 0, 0, 1)) == 0.9  # paying does not erase reports


def test_standing_refuses_negative_counts() -> None:
    with pytest.raises(InvalidRequest):
        Standing(1, -1, 0, 0)
