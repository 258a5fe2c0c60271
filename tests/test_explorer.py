"""The explorer in a real browser: headless Chromium loads every page from the
live local network (``cloud``: a control plane and three agents, fast blocks)
at a desktop and a phone viewport, and each figure shown is checked against
the JSON API. A buyer with a running cluster signs in with their API key to
see its Ray addresses. Screenshots land in ``benchmarks/out/screenshots``.
The last test renders every page in-process on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from solders.keypair import Keypair

from idlegrid.core import block_publication, emission, rewards
from idlegrid.core.connectivity import tier_name
from idlegrid.core.fees import units
from idlegrid.explorer.charts import CENTROIDS
from idlegrid.ledger.chain import Asset
from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import RegisterRequest
from tests.conftest import FakeClock, Network, cpu_hardware, gpu_hardware
from tests.explorer_support import (
    Scene,
    agreed,
    bars,
    chromium,
    dec,
    open_scene,
    row_keys,
    rows,
    table,
    text,
)

e2e = pytest.mark.e2e  # the browser tests; the last test runs in-process

RH = ("ready", "hired")
FACTS = ("status", "readiness", "model", "location", "tier")


@pytest.fixture(scope="module")
def scene(cloud: LocalNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """A buyer with a running 1-device cluster and an API key; device 0 fully staked;
    the browser (a missing one fails the tests: CI installs it, see .ci/run)."""
    with chromium() as browser:
        scene = open_scene(cloud, browser, tmp_path_factory.mktemp("screenshots"))
        try:
            yield scene
        finally:
            scene.close()


@e2e
def test_home_counts_supply_and_hours(scene: Scene) -> None:
    api, ui = scene.api, scene.ui
    devices = api.list_devices(limit=1000).items
    shown_here = [d for d in devices if d.readiness.value in ("cluster_ready", "hired")]
    models = {d.model for d in shown_here if d.model}  # all supported: they passed a proof
    countries = {d.location for d in shown_here if d.location}  # the local agents give one

    def count(readiness: str, **filters: str) -> int:
        return int(api.list_devices(readiness=readiness, limit=1, **filters).total)

    def expected() -> dict[str, Any]:
        supply = api.token_supply()
        return {
            "cards": {
                f"{r}-{c}": sum(count(readiness, kind=k) for k in kinds)
                for r, readiness in zip(RH, ("cluster_ready", "hired"), strict=True)
                for c, kinds in (("gpu", ("gpu", "apple")), ("cpu", ("cpu",)))
            },
            "models": {
                m: (count("cluster_ready", model=m), count("hired", model=m)) for m in models
            },
            "countries": {
                c: (count("cluster_ready", location=c), count("hired", location=c))
                for c in countries
            },
            "burned": Decimal(supply.burned),
            "circulating": Decimal(supply.circulating),
            "paid": sum(Decimal(b.paid) for b in api.list_blocks(1000).items),
        }

    def shown() -> dict[str, Any]:
        page = ui.open("/explorer")
        return {
            "cards": {f"{r}-{c}": int(text(page, f"{r}-{c}")) for r in RH for c in ("gpu", "cpu")},
            "models": table(page, "by-model", "data-model", ready=int, hired=int),
            "countries": table(page, "by-country", "data-country", ready=int, hired=int),
            "burned": dec(text(page, "burned")),
            "circulating": dec(text(page, "circulating")),
            "paid": dec(text(page, "rewards-paid")),
        }

    ui.load("/explorer", "home")
    seen, want = agreed(expected, shown)
    assert seen == want
    assert seen["cards"]["hired-cpu"] >= 1  # the buyer's cluster

    before = sum(d.uptime_s for d in api.list_devices(limit=1000).items) / 3600
    page = ui.open("/explorer")
    after = sum(d.uptime_s for d in api.list_devices(limit=1000).items) / 3600
    assert before - 0.01 <= dec(text(page, "uptime-hours")) <= after + 0.01
    # Compute hours served count this buyer's cluster among all the others.
    now = time.time()
    nodes = scene.buyer.get_cluster(scene.cluster.id).nodes
    ours = sum((n.left_at or now) - n.joined_at for n in nodes if n.joined_at) / 3600
    assert ours > 0 and float(dec(text(page, "hired-hours"))) >= ours - 0.01


@e2e
def test_workers_list_and_filters(scene: Scene) -> None:
    api, ui = scene.api, scene.ui
    page = ui.load("/explorer/devices", "devices")

    def listed(**filters: str) -> tuple[list[str], int]:
        got = api.list_devices(limit=50, **filters)
        return [d.id for d in got.items], got.total

    def on_page() -> tuple[list[str], int]:
        ui.desktop.reload()
        return row_keys(ui.desktop, "devices", "data-device"), int(text(ui.desktop, "total"))

    seen, want = agreed(listed, on_page)
    assert seen == want and len(seen[0]) >= 3

    # The form filters through the query string.
    page.select_option('[data-testid="filter-status"]', "up")
    page.fill('[data-testid="filter-location"]', "us")
    with page.expect_navigation():
        page.click('[data-testid="apply"]')
    assert "status=up" in page.url and "location=us" in page.url
    assert page.input_value('[data-testid="filter-location"]') == "US"  # read as a country code
    ui.shoot(page, "devices-filtered")
    seen, want = agreed(lambda: listed(status="up", location="US"), on_page)
    assert seen == want

    path = "/explorer/devices?readiness=hired&kind=cpu"
    ui.open(path)
    seen, want = agreed(lambda: listed(readiness="hired", kind="cpu"), on_page)
    assert seen == want and scene.hired in seen[0]

    page = ui.open("/explorer/devices?status=bogus", status=400)
    assert "unknown status" in text(page, "problem")


@e2e
def test_device_page_status_uptime_proofs_tier_rewards(scene: Scene) -> None:
    api, ui = scene.api, scene.ui
    for device_id, name in ((scene.staked, "device"), (scene.hired, "device-hired")):
        path = f"/explorer/devices/{device_id}"
        ui.load(path, name)

        def expected(device_id: str = device_id) -> dict[str, Any]:
            d = api.get_device(device_id)
            stake = api.get_stake(device_id)
            return {
                "facts": (d.status.value, d.readiness.value, d.model, d.location, str(d.tier)),
                "tier_name": tier_name(d.tier) if d.tier is not None else "not measured yet",
                "proofs": [(p.id, p.status.value) for p in api.proofs(device_id).items[:20]],
                "rewards": {
                    str(r.block): (Decimal(r.units), ", ".join(r.excluded_because))
                    for r in api.device_rewards(device_id).items[:48]
                },
                "stake": (Decimal(stake.effective), Decimal(stake.minimum), stake.meets_minimum),
            }

        def shown(path: str = path) -> dict[str, Any]:
            page = ui.open(path)
            return {
                "facts": tuple(text(page, t) for t in FACTS),
                "tier_name": text(page, "tier-name"),
                "proofs": [
                    (k, v[0]) for k, v in table(page, "proofs", "data-proof", status=str).items()
                ],
                "rewards": table(page, "rewards", "data-block", units=dec, reasons=str),
                "stake": (
                    dec(text(page, "stake-effective")),
                    dec(text(page, "stake-minimum")),
                    text(page, "stake-meets") == "yes",
                ),
            }

        seen, want = agreed(expected, shown)
        assert seen == want and want["proofs"], device_id
        assert any(status == "verified" for _, status in want["proofs"])

        # The 30-day uptime graph: 30 daily bars that add up to the device's uptime.
        before = sum(h.seconds for h in api.get_device(device_id).uptime_hours) / 3600
        page = ui.open(path)
        after = sum(h.seconds for h in api.get_device(device_id).uptime_hours) / 3600
        total = float(dec(text(page, "uptime-30d")))
        assert before - 0.01 <= total <= after + 0.01
        days = bars(page, "uptime-chart")
        assert len(days) == 30 and abs(sum(v for _, v, _ in days) - total) <= 0.01
    assert text(ui.open(f"/explorer/devices/{scene.staked}"), "stake-meets") == "yes"
    page = ui.open("/explorer/devices/nope", status=404)
    assert "No device is registered" in text(page, "error")


@e2e
def test_clusters_public_then_signed_in(scene: Scene) -> None:
    ui, cluster = scene.ui, scene.cluster
    assert cluster.ray_address and cluster.ray_token
    page = ui.load("/explorer/clusters", "clusters-public")
    mine = rows(page, "clusters", "data-cluster")[cluster.id]
    view = scene.buyer.get_cluster(cluster.id)
    assert mine["status"] == view.status == "running"
    assert int(mine["devices"]) == sum(1 for n in view.nodes if n.left_at is None) == 1
    assert abs(float(dec(mine["remaining"])) - (view.remaining_s or 0) / 3600) <= 0.02
    assert cluster.ray_address not in page.content()  # only the buyer sees where Ray is

    page.fill('[data-testid="api-key"]', "ig_not_a_key")
    with page.expect_navigation():
        page.click('[data-testid="sign-in"]')
    assert "not recognised" in text(page, "key-problem")

    page.fill('[data-testid="api-key"]', scene.api_key)
    with page.expect_navigation():
        page.click('[data-testid="sign-in"]')
    cookie = next(c for c in page.context.cookies() if c["name"] == "idlegrid_api_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/explorer"
    ui.shoot(page, "clusters-owner")
    view = scene.buyer.get_cluster(cluster.id)
    own = rows(page, "mine", "data-cluster")[cluster.id]
    assert own["ray-address"] == view.ray_address
    assert own["ray-client"] == view.ray_client_address
    assert own["dashboard"] == view.dashboard_url
    assert text(page, "owner") == view.owner
    assert cluster.ray_token not in page.content()  # never on a page
    with page.expect_navigation():
        page.click('[data-testid="forget"]')
    assert cluster.ray_address not in page.content()

    # The same, for a request that carries the key itself.
    context = page.context.browser.new_context(  # type: ignore[union-attr]
        base_url=ui.base_url, extra_http_headers={"Authorization": f"Bearer {scene.api_key}"}
    )
    other = context.new_page()
    other.goto("/explorer/clusters")
    assert rows(other, "mine", "data-cluster")[cluster.id]["ray-address"] == view.ray_address
    context.close()


@e2e
def test_staking_totals_and_fully_staked(scene: Scene) -> None:
    api, ui = scene.api, scene.ui
    ui.load("/explorer/staking", "staking")

    def expected() -> dict[str, Any]:
        stakes = [api.get_stake(d.id) for d in api.list_devices(limit=1000).items]
        lines = {}
        for s in stakes:
            locked = units(s.active, "IO") + sum(units(a, "IO") for a, _ in s.cooling)
            locked += sum(units(c.amount, "IO") for c in s.costakes)
            if locked:
                lines[s.device_id] = (
                    Decimal(s.effective),
                    Decimal(s.minimum),
                    s.meets_minimum,
                    locked,
                )
        return {
            "lines": lines,
            "total": sum(v[0] for v in lines.values()),
            "locked": emission.to_io(sum(v[3] for v in lines.values())),
            "full": sum(1 for v in lines.values() if v[2]),
        }

    def shown() -> dict[str, Any]:
        page = ui.open("/explorer/staking")
        return {
            "lines": table(
                page,
                "stakes",
                "data-device",
                effective=dec,
                minimum=dec,
                meets=lambda t: t == "yes",
                locked=lambda t: units(str(dec(t)), "IO"),
            ),
            "total": dec(text(page, "total-effective")),
            "locked": dec(text(page, "total-locked")),
            "full": int(text(page, "fully-staked-count")),
        }

    seen, want = agreed(expected, shown)
    assert seen == want and want["lines"][scene.staked][2] is True


@e2e
def test_token_supply_and_emission_schedule(scene: Scene) -> None:
    api, ui = scene.api, scene.ui
    ui.load("/explorer/token", "token")
    keys = ("max", "genesis", "emitted", "minted", "burned", "circulating")

    def expected() -> dict[str, Any]:
        supply = api.token_supply().model_dump()
        return {
            "supply": {k: Decimal(supply[k]) for k in keys},
            "hour": api.list_blocks(1).items[0].number,
        }

    def shown() -> dict[str, Any]:
        page = ui.open("/explorer/token")
        return {
            "supply": {k: dec(text(page, f"supply-{k}")) for k in keys},
            "hour": int(text(page, "hour")),
        }

    seen, want = agreed(expected, shown)
    assert seen == want and want["supply"]["max"] == emission.MAX_SUPPLY
    page = ui.desktop
    years = emission.by_period("year")
    assert table(page, "schedule", "data-year", amount=dec, cumulative=dec) == {
        str(i): (emission.to_io(a), emission.to_io(c)) for i, a, c in years
    }
    chart = bars(page, "emission-chart")
    assert [round(v, 3) for _, v, _ in chart] == [
        round(float(emission.to_io(a)) / 1e6, 3) for _, a, _ in years
    ]
    highlighted = [label for label, _, cls in chart if "hl" in cls]
    assert highlighted == [str(want["hour"] // emission.HOURS_PER_YEAR)]
    assert dec(text(page, "hour-amount")) == emission.to_io(emission.hour_amount(want["hour"]))


@e2e
def test_network_map_by_country(scene: Scene) -> None:
    api, ui = scene.api, scene.ui
    ui.load("/explorer/map", "map")

    def expected() -> dict[str, tuple[Any, ...]]:
        devices = api.list_devices(limit=1000).items
        out: dict[str, tuple[Any, ...]] = {}
        for c in {d.location or "??" for d in devices}:
            here = [d for d in devices if (d.location or "??") == c]
            up = (
                api.list_devices(location=c, status="up", limit=1).total
                if c != "??"
                else sum(d.status.value == "up" for d in here)
            )
            cpus = sum(d.kind.value == "cpu" for d in here)
            out[c] = (len(here), up, len(here) - cpus, cpus)
        return out

    def shown() -> dict[str, tuple[Any, ...]]:
        page = ui.open("/explorer/map")
        return table(page, "countries", "data-country", devices=int, up=int, gpus=int, cpus=int)

    seen, want = agreed(expected, shown)
    assert seen == want and {"US", "DE", "JP"} <= set(want)
    dots = {label: value for label, value, _ in bars(ui.desktop, "map-chart")}
    assert dots == {c: float(v[0]) for c, v in want.items() if c in CENTROIDS}


@e2e
def test_block_rewards_pages_and_verification(scene: Scene, cloud: LocalNetwork) -> None:
    api, ui = scene.api, scene.ui
    ui.load("/explorer/blocks", "blocks")

    def listed() -> dict[str, tuple[Any, ...]]:
        return {
            str(b.number): (b.status, Decimal(b.emission), Decimal(b.paid), b.nominated, b.excluded)
            for b in api.list_blocks(50).items
        }

    def shown() -> dict[str, tuple[Any, ...]]:
        page = ui.open("/explorer/blocks")
        return table(
            page,
            "blocks",
            "data-block",
            status=str,
            emission=dec,
            paid=dec,
            nominated=int,
            excluded=int,
        )

    seen, want = agreed(listed, shown)
    assert seen == want

    def nominating() -> int | None:
        for b in api.list_blocks(20).items:
            if b.status == "completed" and b.nominated:
                block = api.get_block(b.number)
                assert block.inputs is not None and block.outputs is not None
                nominated, _ = block_publication.published_rows(block.inputs, block.outputs)
                if any(r["device_id"] == scene.staked and r["units"] for r in nominated):
                    return b.number
        return None

    number = cloud.wait_for(nominating, 90, "a block that rewards the staked device")
    block = api.get_block(number)
    assert block.inputs is not None and block.outputs is not None and block.outputs_hash
    page = ui.load(f"/explorer/blocks/{number}", "block")
    assert text(page, "status") == "completed"
    assert dec(text(page, "emission")) == Decimal(block.emission)
    assert dec(text(page, "paid")) == Decimal(block.paid)
    assert int(text(page, "nominated")) == block.nominated
    assert int(text(page, "excluded")) == block.excluded
    assert text(page, "inputs-hash") == block.inputs_hash
    assert text(page, "outputs-hash") == block.outputs_hash
    assert rewards.verify_block(block.inputs, block.outputs_hash)
    assert text(page, "verified") == "verified"
    nominated, excluded = block_publication.published_rows(block.inputs, block.outputs)
    assert table(page, "nominated-table", "data-device", units=dec) == {
        r["device_id"]: (emission.to_io(r["units"]),) for r in nominated
    }
    assert table(page, "excluded-table", "data-device", reasons=str) == {
        x["device_id"]: (", ".join(x["reasons"]),) for x in excluded
    }
    link = page.get_by_test_id("json-link").get_attribute("href")
    published = page.request.get(str(link)).json()
    assert published["outputs_hash"] == block.outputs_hash and published["inputs"] == block.inputs
    assert ui.open("/explorer/blocks/99999999", status=404).get_by_test_id("error").is_visible()

    # The owner's wallet page: earned and claimable, then a claim in its table.
    claim = scene.owner.claim_rewards()
    page = ui.open(f"/explorer/devices/{scene.staked}")
    page.get_by_test_id("owner").click()
    page.wait_for_url(f"**/explorer/wallets/{scene.staked}")

    def wallet_api() -> tuple[Decimal, Decimal, int]:
        b = api.reward_balance(scene.staked)
        return Decimal(b.earned), Decimal(b.unclaimed), b.claimed_through

    def wallet_page() -> tuple[Decimal, Decimal, int]:
        shown = ui.open(f"/explorer/wallets/{scene.staked}")
        return (
            dec(text(shown, "earned")),
            dec(text(shown, "unclaimed")),
            int(text(shown, "claimed-through")),
        )

    seen, want = agreed(wallet_api, wallet_page)
    assert seen == want and want[2] == claim.through and want[0] >= Decimal(claim.amount)
    page = ui.open(f"/explorer/wallets/{scene.staked}")
    assert table(page, "claims", "data-through", amount=dec)[str(claim.through)] == (
        Decimal(claim.amount),
    )
    assert scene.staked in row_keys(page, "devices", "data-device")
    ui.shoot(page, "wallet")
    assert (
        ui.open("/explorer/wallets/not-a-wallet", status=422).get_by_test_id("error").is_visible()
    )


def test_every_page_renders_on_each_database(network: Network, clock: FakeClock) -> None:
    """The explorer's own queries (groupings, sums, joins) on both databases."""
    gpu, cpu = Keypair(), Keypair()
    network.client(gpu).register_device(RegisterRequest(hardware=gpu_hardware(), location="DE"))
    network.client(cpu).register_device(RegisterRequest(hardware=cpu_hardware(), location="US"))
    cpu_id = str(cpu.pubkey())
    network.state.ledger.grant(cpu_id, Asset.IO, 200 * emission.UNITS_PER_IO)
    network.client(cpu).stake(cpu_id, "200")
    network.state.blocks.tick()
    clock.advance(3600 + 5)
    assert network.state.blocks.tick() == [0]
    http = network.http
    for path, shows in [
        ("/explorer", "accounted, 2 devices"),
        ("/explorer/devices?kind=gpu&location=DE", str(gpu.pubkey())),
        (f"/explorer/devices/{cpu_id}", "200.00 IO"),
        ("/explorer/clusters", "No cluster has been deployed yet."),
        ("/explorer/blocks", "/v1/blocks/0"),
        ("/explorer/blocks/0", "verified"),
        ("/explorer/staking", cpu_id),
        ("/explorer/token", "300,000,000.00"),
        ("/explorer/map", 'data-country="DE"'),
        (f"/explorer/wallets/{cpu_id}", "No claim yet."),
    ]:
        reply = http.get(path)
        assert reply.status_code == 200 and shows in reply.text, path
    assert http.get("/explorer/static/explorer.css").headers["content-type"].startswith("text/css")
    assert http.get("/openapi.json").json()["paths"].keys().isdisjoint({"/explorer"})
