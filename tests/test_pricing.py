"""Prices: the pure rules (properties), and quotes, floors, auctions and the
price list through the API."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idlegrid.core import pricing
from idlegrid.core.fees import units
from idlegrid.core.pricing import Market, PriceRequest, Urgency
from idlegrid.errors import InvalidRequest, NoMatchingDevices, NotYourDevice
from idlegrid.ledger.chain import Asset
from idlegrid.protocol import DeployRequest
from idlegrid.server.settings import ServerSettings
from tests.conftest import FakeClock, Network, gpu_hardware
from tests.test_clusters import HireableFleet

IO_USD = Decimal("1.5")
markets = st.builds(Market, idle=st.integers(0, 500), hired=st.integers(0, 500))
requests = st.builds(
    PriceRequest,
    base_usd=st.decimals(Decimal("0.04"), Decimal("60"), places=2),
    devices=st.integers(1, 64),
    hours=st.integers(1, 2000),
    market=markets,
    urgency=st.sampled_from(list(Urgency)),
    min_tier=st.integers(0, 4),
    location_constrained=st.booleans(),
    secure=st.booleans(),
)
currencies = st.sampled_from(["IO", "USDC"])


def unit_price(req: PriceRequest, currency: str) -> int:
    return pricing.price(req, currency, IO_USD).per_device_hour


@given(req=requests, currency=currencies)
def test_every_breakdown_sums_to_its_total(req: PriceRequest, currency: str) -> None:
    bd = pricing.price(req, currency, IO_USD)
    assert sum(i.units for i in bd.items) == bd.per_device_hour >= 1
    assert sum(t for _, t in bd.item_totals()) == bd.total
    assert bd.total == bd.per_device_hour * req.devices * req.hours


@given(req=requests, currency=currencies, fewer=st.integers(1, 50))
def test_less_supply_never_lowers_the_price(req: PriceRequest, currency: str, fewer: int) -> None:
    scarcer = _with(req, market=Market(max(0, req.market.idle - fewer), req.market.hired))
    assert unit_price(scarcer, currency) >= unit_price(req, currency)


@given(req=requests, currency=currencies, more=st.integers(1, 50))
def test_more_demand_never_lowers_the_price(req: PriceRequest, currency: str, more: int) -> None:
    m = req.market
    busier = _with(req, market=Market(m.idle, m.hired + more))  # more devices hired
    moved = _with(req, market=Market(max(0, m.idle - more), m.hired + min(more, m.idle)))
    assert unit_price(busier, currency) >= unit_price(req, currency)
    assert unit_price(moved, currency) >= unit_price(req, currency)


@given(req=requests, currency=currencies, longer=st.integers(1, 1000))
def test_a_longer_rental_never_raises_the_hourly_rate(
    req: PriceRequest, currency: str, longer: int
) -> None:
    assert unit_price(_with(req, hours=req.hours + longer), currency) <= unit_price(req, currency)


def _with(req: PriceRequest, **changes: object) -> PriceRequest:
    from dataclasses import replace

    return replace(req, **changes)  # type: ignore[arg-type]


def test_the_items_of_a_typical_quote() -> None:
    req = PriceRequest(Decimal("2.00"), 4, 168, Market(idle=1, hired=19), Urgency.NOW, 3, True)
    bd = pricing.price(req, "USDC", IO_USD)
    items = {i.name: i.units for i in bd.items}
    # u = 19 / 20 = 95 %: a surge of (95 − 85) / 15 = +66.67 %; urgent +5 %; 3 extra
    # devices +3 %; tier 3 +10 %; a location +5 %; a week −10 %.
    assert items == {
        "base": 2_000_000, "supply_demand": 1_333_333, "urgency": 100_000,
        "cluster_size": 60_000, "connectivity": 200_000, "location": 100_000,
        "duration": -200_000,
    }  # fmt: skip
    assert bd.per_device_hour == 3_593_333
    calm = pricing.price(_with(req, market=Market(idle=15, hired=5)), "USDC", IO_USD)
    # u = 25 %: a discount of 20 % × (60 − 25) / 60 = −11.67 %
    assert dict((i.name, i.units) for i in calm.items)["supply_demand"] == -233_333
    steady = pricing.price(_with(req, market=Market(idle=5, hired=15)), "USDC", IO_USD)
    assert "supply_demand" not in {i.name for i in steady.items}  # 75 %: the list price holds


def test_floors_and_the_auction() -> None:
    assert (
        pricing.price(
            PriceRequest(Decimal("1"), 1, 1, Market(100, 0), Urgency.FLEXIBLE),
            "USDC",
            IO_USD,
            floor_usd=Decimal("2"),
        ).per_device_hour
        == 2_000_000
    )
    asks = [pricing.Ask("c", Decimal("3")), pricing.Ask("a", Decimal("1")),
            pricing.Ask("b", Decimal("2")), pricing.Ask("d", Decimal("9"))]  # fmt: skip
    taken, clearing = pricing.auction_clear(asks, 3, Decimal("5"))  # type: ignore[misc]
    assert [a.device_id for a in taken] == ["a", "b", "c"] and clearing == Decimal("3")
    assert pricing.auction_clear(asks, 4, Decimal("5")) is None


# -- through the API ---------------------------------------------------------------------------


@pytest.fixture
def fleet(network: Network) -> HireableFleet:
    return HireableFleet(network)


def test_quotes_are_itemised_and_sum_to_the_total(fleet: HireableFleet) -> None:
    for _ in range(3):
        fleet.add(gpu_hardware())
    client = fleet.buyer_client()
    calm = client.quote(DeployRequest(name="q", hardware="h100-sxm-80gb", start="flexible"))
    rush = client.quote(DeployRequest(name="q", hardware="h100-sxm-80gb", quantity=3))
    for q in (calm, rush):
        per = sum(units(i.per_device_hour, "IO") for i in q.breakdown)
        assert per == units(q.price_per_device_hour, "IO")
        assert sum(units(i.total, "IO") for i in q.breakdown) == units(q.subtotal, "IO")
        assert q.mode == "dynamic"
    # Taking every idle H100 now costs more than one whenever convenient.
    assert units(rush.price_per_device_hour, "IO") > units(calm.price_per_device_hour, "IO")
    prices = {(p.model, p.location): p for p in fleet.net.client().prices().items}
    assert prices[("h100-sxm-80gb", "*")].idle == 3


def test_a_device_is_never_matched_below_its_floor(fleet: HireableFleet, clock: FakeClock) -> None:
    cheap, dear = fleet.add(gpu_hardware()), fleet.add(gpu_hardware())
    owner = fleet.agent(dear)  # a device without an owner owns itself
    owner.set_floor(dear, "1000")
    with pytest.raises(NotYourDevice):
        fleet.agent(cheap).set_floor(dear, "0")
    client = fleet.buyer_client()
    with pytest.raises(NoMatchingDevices):  # only one device will take the price
        client.quote(DeployRequest(name="f", hardware="h100-sxm-80gb", quantity=2))
    fleet.fund(100_000 * 10**8)
    view = client.deploy(client.quote(DeployRequest(name="f", hardware="h100-sxm-80gb")).id)
    assert [n.device_id for n in view.nodes] == [cheap]


def test_auction_mode_takes_the_lowest_asks(fleet: HireableFleet) -> None:
    devices = [fleet.add(gpu_hardware()) for _ in range(3)]
    for device, usd in zip(devices, ("30", "10", "20"), strict=True):
        fleet.agent(device).set_floor(device, usd)
    client = fleet.buyer_client()
    quote = client.quote(
        DeployRequest(name="a", hardware="h100-sxm-80gb", quantity=2, max_price_usd="25")
    )
    assert quote.mode == "auction" and quote.usd_per_device_hour == "20.0000"
    fleet.net.state.ledger.grant(fleet.buyer_id, Asset.IO, 10_000 * 10**8)
    hired = {n.device_id for n in client.deploy(quote.id).nodes}
    assert hired == {devices[1], devices[2]}
    with pytest.raises(NoMatchingDevices) as err:
        client.quote(
            DeployRequest(name="a", hardware="h100-sxm-80gb", quantity=1, max_price_usd="5")
        )
    assert err.value.details["asks_under_max"] == 0
    with pytest.raises(InvalidRequest):
        client.quote(DeployRequest(name="a", hardware="h100-sxm-80gb", max_price_usd="lots"))


def test_the_price_list_is_served_at_both_paths(fleet: HireableFleet) -> None:
    fleet.add(gpu_hardware(), location="US")
    short = fleet.net.http.get("/prices").json()["items"]
    assert short == fleet.net.http.get("/v1/prices").json()["items"]
    assert {(p["model"], p["location"]) for p in short} == {
        ("h100-sxm-80gb", "US"),
        ("h100-sxm-80gb", "*"),
    }


def test_quotes_are_rate_limited_per_buyer_whatever_the_key(
    settings: ServerSettings, clock: FakeClock
) -> None:
    """A quote costs the network a match and needs no funds, so a buyer gets
    ``quotes_per_minute`` of them; every API key of a wallet draws on the wallet's one
    bucket (minting keys buys nothing), and other buyers are not affected."""
    from idlegrid.errors import RateLimited
    from idlegrid.sdk.client import Client

    net = Network(settings.model_copy(update={"quotes_per_minute": 2}), clock)
    try:
        fleet = HireableFleet(net)
        fleet.add(gpu_hardware())
        wallet = fleet.buyer_client()
        keys = [wallet.create_api_key(f"k{i}").key for i in range(2)]
        by_key = [Client("http://testserver", api_key=k, http=net.http) for k in keys]
        req = DeployRequest(name="q", hardware="h100-sxm-80gb")
        by_key[0].quote(req)
        by_key[1].quote(req)
        with pytest.raises(RateLimited) as refused:
            by_key[0].quote(req)
        assert refused.value.details["limit"] == "buyer"
        assert 0 < refused.value.details["retry_after_s"] <= 30
        with pytest.raises(RateLimited):
            wallet.quote(req)  # signed by the wallet itself: the same bucket
        other = HireableFleet(net).buyer_client()
        assert other.quote(req).devices == 1  # another buyer quotes as before
        clock.advance(30)  # a token back (two a minute)
        fleet.heartbeat_all()  # the device is still there
        assert by_key[1].quote(req).devices == 1
    finally:
        net.close()
