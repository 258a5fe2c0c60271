"""Helpers for the explorer's browser tests: headless Chromium at a desktop and a
phone viewport, reading what a page shows, and screenshots.

The browser is Debian's ``chromium`` (``IDLEGRID_CHROMIUM`` names another
binary), driven by Playwright's Python package; nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Browser, Page, sync_playwright

from idlegrid.identity import load_keypair
from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import ClusterView, FaucetRequest
from idlegrid.sdk import Client
from tests.cloud_support import deploy_running, funded_buyer

T = TypeVar("T")

CHROMIUM = os.environ.get("IDLEGRID_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
SHOTS_COPY = REPO / "benchmarks" / "out" / "screenshots"
VIEWPORTS = {"desktop": (1280, 900), "phone": (390, 844)}

# (row key attribute) → {column: text} for every row of a table.
ROWS_JS = """(rows, key) => rows.map(r => [r.getAttribute(key), Object.fromEntries(
  [...r.querySelectorAll('[data-col]')].map(c => [c.dataset.col, c.textContent.trim()]))])"""
BARS_JS = "bars => bars.map(b => [b.dataset.label, Number(b.dataset.value), b.classList.value])"


def dec(text: str) -> Decimal:
    """A figure as the page shows it (``1,234.50 IO``) as an exact decimal."""
    return Decimal(text.split()[0].replace(",", ""))


def agreed(api: Callable[[], T], shown: Callable[[], T], tries: int = 6) -> tuple[T, T]:
    """(what the page showed, what the API said), read while the API held still:
    blocks close every few seconds, so a figure may move between two reads."""
    for _ in range(tries):
        before = api()
        seen = shown()
        if api() == before:
            return seen, before
        time.sleep(0.3)
    raise AssertionError("the API's figures kept changing while the page was read")


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium; a missing binary is a failure, never a skip."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class Explorer:
    """One page per viewport on the live network's explorer; screenshots go to
    ``shots`` and are copied to ``benchmarks/out/screenshots`` (ignored by git)."""

    def __init__(self, browser: Browser, base_url: str, shots: Path) -> None:
        self.base_url = base_url
        self.shots = shots
        SHOTS_COPY.mkdir(parents=True, exist_ok=True)
        self.pages: dict[str, Page] = {}
        for name, (width, height) in VIEWPORTS.items():
            context = browser.new_context(
                viewport={"width": width, "height": height},
                is_mobile=name == "phone",
                has_touch=name == "phone",
                base_url=base_url,
            )
            self.pages[name] = context.new_page()

    @property
    def desktop(self) -> Page:
        return self.pages["desktop"]

    def open(self, path: str, viewport: str = "desktop", status: int = 200) -> Page:
        page = self.pages[viewport]
        response = page.goto(path)
        assert response is not None and response.status == status, (path, response)
        return page

    def shoot(self, page: Page, name: str) -> Path:
        viewport = next(k for k, p in self.pages.items() if p is page)
        path = self.shots / f"{name}-{viewport}.png"
        page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, SHOTS_COPY / path.name)
        return path

    def check_phone(self, path: str, name: str) -> None:
        """The page fits a phone: nothing wider than the screen but the tables,
        which scroll inside their frames; the navigation and heading are shown."""
        page = self.open(path, "phone")
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{path} is {overflow}px wider than a phone"
        assert page.locator("nav").is_visible() and page.locator("h1").is_visible()
        self.shoot(page, name)

    def load(self, path: str, name: str) -> Page:
        """Check the phone layout, then open the page on the desktop and shoot it."""
        self.check_phone(path, name)
        page = self.open(path)
        self.shoot(page, name)
        return page

    def close(self) -> None:
        for page in self.pages.values():
            page.context.close()


def text(page: Page, testid: str) -> str:
    return page.get_by_test_id(testid).inner_text().strip()


def rows(page: Page, table: str, key: str) -> dict[str, dict[str, str]]:
    found: list[list[Any]] = page.eval_on_selector_all(
        f'[data-testid="{table}"] tbody tr[{key}]', ROWS_JS, key
    )
    return {k: v for k, v in found}


def row_keys(page: Page, table: str, key: str) -> list[str]:
    keys: list[str] = page.eval_on_selector_all(
        f'[data-testid="{table}"] tbody tr[{key}]', "(rs, k) => rs.map(r => r.getAttribute(k))", key
    )
    return keys


def bars(page: Page, chart: str) -> list[tuple[str, float, str]]:
    found: list[list[Any]] = page.eval_on_selector_all(
        f'[data-testid="{chart}"] [data-value]', BARS_JS
    )
    return [(str(a), float(b), str(c)) for a, b, c in found]


def table(
    page: Page, name: str, key: str, **casts: Callable[[str], Any]
) -> dict[str, tuple[Any, ...]]:
    """Each row of table ``name`` by its ``key`` attribute: the ``data-col`` cells
    named in ``casts``, each read with its cast (``int``, :func:`dec`, ``str``)."""
    return {
        k: tuple(cast(v[c]) for c, cast in casts.items()) for k, v in rows(page, name, key).items()
    }


@dataclass
class Scene:
    """What the tests look at: a buyer's running cluster and API key, a fully
    staked device, and the explorer in the browser."""

    api: Client
    buyer: Client
    owner: Client
    api_key: str
    cluster: ClusterView
    hired: str
    staked: str
    ui: Explorer

    def close(self) -> None:
        self.ui.close()
        self.buyer.terminate_cluster(self.cluster.id)  # frees the device for later tests
        for client in (self.api, self.buyer, self.owner):
            client.close()


def open_scene(cloud: LocalNetwork, browser: Browser, shots: Path) -> Scene:
    """Fund a buyer, rent a 1-device cluster, and stake device 0 to its minimum
    (device 2 is left to tests/test_staking_cli.py, which stakes it itself)."""
    api = Client(cloud.server_url)
    cloud.wait_for(
        lambda: api.list_devices(readiness="cluster_ready").total >= 1, 90, "a free device"
    )
    buyer, _ = funded_buyer(cloud)
    key = buyer.create_api_key("explorer").key
    assert key is not None
    cluster = deploy_running(buyer, 1, name="explorer")
    owner = Client(cloud.server_url, keypair=load_keypair(cloud.keypair_path(0)))
    staked = cloud.device_id(0)
    stake = owner.get_stake(staked)
    if not stake.meets_minimum:
        owner.faucet(staked, FaucetRequest(asset="IO", amount=stake.minimum))
        owner.stake(staked, stake.minimum)
    ui = Explorer(browser, cloud.server_url, shots)
    return Scene(api, buyer, owner, key, cluster, cluster.nodes[0].device_id, staked, ui)
