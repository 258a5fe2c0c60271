"""The marketplace side of IO Cloud: which devices could serve a request, what
the request costs, and the price list.

``QuoteService`` and ``ClusterService`` ask this for candidates and matches
while they quote, deploy and heal; the rules are pure (``core/matching.py``
ranks and filters, ``core/pricing.py`` prices). Reads only, except a provider's
floor and a reservation; each method works inside the caller's session where it
takes one.

Reservation (``reserve``): a device is taken by ``UPDATE devices SET cluster_id
= :c WHERE id = :d AND cluster_id IS NULL``, so no device is ever in two
clusters. On PostgreSQL the chosen rows are first locked with ``SELECT … FOR
UPDATE SKIP LOCKED``: a racing deploy never waits on (or deadlocks with)
another, it just matches again without the devices it could not lock. On SQLite
every write transaction holds the database's write lock from its first
statement (``BEGIN IMMEDIATE``), which serialises deploys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from decimal import ROUND_CEILING, Decimal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.catalog import Catalog
from idlegrid.core import matching, pricing
from idlegrid.core.clusters import ClusterStatus, list_price_usd
from idlegrid.core.fees import DECIMALS
from idlegrid.errors import InvalidRequest, NoMatchingDevices, NotYourDevice, UnknownDevice
from idlegrid.ledger.oracle import PriceOracle
from idlegrid.protocol import (
    DeployRequest,
    DeviceFloor,
    PriceEntry,
    PriceList,
    Readiness,
)
from idlegrid.server.db.models import Cluster, Device, PricePoint
from idlegrid.server.liveness import LivenessTable
from idlegrid.server.services.match_index import (
    MarketIndex,
    candidate,
    hireable_rows,
    mark_changed,
    proof_history,
)

RESERVE_ATTEMPTS = 8  # matches a deploy tries when racing deploys take its picks


class Marketplace:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        liveness: LivenessTable,
        catalog: Catalog,
        oracle: PriceOracle,
        clock: Callable[[], float],
        index: MarketIndex | None = None,
    ) -> None:
        self.sessions = sessions
        self.liveness = liveness
        self.catalog = catalog
        self.oracle = oracle
        self.clock = clock
        # Matches come from the index when there is one, else from a scan (``candidates``).
        self.index = index

    def auction(
        self,
        req: DeployRequest,
        reqs: matching.Requirements,
        candidates: list[matching.Candidate],
        floors: dict[str, int],
        devices: int,
        hours: int,
    ) -> pricing.Breakdown:
        """The buyer's maximum against the eligible devices' asks (their floors, or
        the list price where a provider set none): lowest asks first, one price."""
        max_usd = pricing.parse_usd(req.max_price_usd or "", "max_price_usd", Decimal("0.000001"))
        eligible = matching.match(candidates, replace(reqs, quantity=None))
        base = self.base_usd(req, eligible.devices)
        asks = [
            pricing.Ask(c.device_id, Decimal(floors[c.device_id]) / 10**6 or base)
            for c in eligible.devices
        ]
        cleared = pricing.auction_clear(asks, devices, max_usd)
        if cleared is None:
            raise NoMatchingDevices(
                "too few provider asks at or under your maximum",
                wanted=devices,
                asks_under_max=sum(1 for a in asks if a.usd <= max_usd),
                explain=eligible.explain.as_dict(),
            )
        _, clearing = cleared
        units = pricing.to_units(clearing, req.currency, self.oracle.io_usd())
        item = pricing.Item("auction", max(1, units), f"highest accepted ask {clearing} USD")
        return pricing.Breakdown(req.currency, (item,), devices, hours)

    def market_of(
        self, db: Session, reqs: matching.Requirements, explain: matching.Explain
    ) -> pricing.Market:
        """Idle and hired devices of the requested hardware in the requested regions:
        the idle ones are those a match of ``reqs`` counted after its location filter."""
        idle = explain.as_dict()["location"]
        q = select(func.count()).select_from(Device).where(Device.cluster_id.is_not(None))
        if reqs.model is not None:
            q = q.where(Device.model == reqs.model)
        elif reqs.kind is not None:
            q = q.where(Device.kind == reqs.kind)
        if reqs.locations:
            q = q.where(Device.location.in_(reqs.locations))
        return pricing.Market(idle=idle, hired=int(db.scalar(q) or 0))

    def micro_usd(self, units: int, currency: str) -> int:
        """A price in ``currency`` units, in millionths of a USD at the oracle's rate,
        rounded up: a price converted from USD to IO units and back must still
        reach the floor it was computed against."""
        usd = Decimal(units).scaleb(-DECIMALS[currency])
        if currency == "IO":
            usd *= self.oracle.io_usd()
        return int((usd * 10**6).to_integral_value(rounding=ROUND_CEILING))

    # -- prices -----------------------------------------------------------------------------

    def set_floor(self, signer: str, device_id: str, usd_text: str) -> DeviceFloor:
        """The owner's floor for a device, per device-hour (0 removes it)."""
        usd = pricing.parse_usd(usd_text, "usd", Decimal(0))
        with self.sessions.begin() as db:
            dev = db.get(Device, device_id, with_for_update=True)
            if dev is None:
                raise UnknownDevice(device_id=device_id)
            if signer != dev.owner:
                raise NotYourDevice("only the device's owner sets its floor", owner=dev.owner)
            dev.floor_micro_usd = int(usd * 10**6)
        return DeviceFloor(device_id=device_id, usd=f"{Decimal(dev.floor_micro_usd) / 10**6:.6f}")

    def current_prices(self) -> list[PricePoint]:
        """The price of a 1-device, 1-hour request now for every model with ready or
        hired devices, per region and over all regions ("*"); rows not yet saved."""
        now = self.clock()
        with self.sessions() as db:
            candidates, _ = self.hireable(db)
            hired = db.execute(
                select(Device.model, Device.location, func.count())
                .where(Device.cluster_id.is_not(None), Device.model.is_not(None))
                .group_by(Device.model, Device.location)
            ).all()
        busy: dict[tuple[str, str], int] = {}
        for model, location, n in hired:
            for key in ((str(model), location or "*"), (str(model), "*")):
                busy[key] = busy.get(key, 0) + int(n)
        idle: dict[tuple[str, str], int] = {}
        for c in candidates:
            for key in ((c.model, c.location or "*"), (c.model, "*")):
                idle[key] = idle.get(key, 0) + 1
        out = []
        for model, location in sorted(set(idle) | set(busy)):
            hw = self.catalog.get(model)
            base = list_price_usd(hw.multiplier, 1, hw.kind.value)
            market = pricing.Market(idle.get((model, location), 0), busy.get((model, location), 0))
            # Priced in USDC at 1 USD: its smallest unit is a millionth of a USD.
            bd = pricing.price(
                pricing.PriceRequest(base, 1, 1, market, location_constrained=location != "*"),
                "USDC",
                Decimal(1),
            )
            out.append(
                PricePoint(
                    at=now,
                    model=model,
                    location=location,
                    micro_usd=bd.per_device_hour,
                    utilisation=float(market.utilisation()),
                    idle=market.idle,
                    hired=market.hired,
                )
            )
        return out

    def record_prices(self) -> int:
        """Append the current prices to the price history (the prices loop)."""
        rows = self.current_prices()
        with self.sessions.begin() as db:
            db.add_all(rows)
        return len(rows)

    def price_list(self) -> PriceList:
        return PriceList(items=[self._entry(p) for p in self.current_prices()])

    def price_history(self, model: str, location: str, limit: int) -> PriceList:
        """A model's recorded prices in a region (or "*"), oldest first."""
        with self.sessions() as db:
            rows = list(
                db.scalars(
                    select(PricePoint)
                    .where(PricePoint.model == model, PricePoint.location == location)
                    .order_by(PricePoint.at.desc())
                    .limit(limit)
                )
            )
        return PriceList(items=[self._entry(p) for p in reversed(rows)])

    def _entry(self, p: PricePoint) -> PriceEntry:
        usd = Decimal(p.micro_usd) / 10**6
        return PriceEntry(
            model=p.model,
            location=p.location,
            usd_per_device_hour=f"{usd:.6f}",
            io_per_device_hour=f"{usd / self.oracle.io_usd():.8f}",
            utilisation=p.utilisation,
            idle=p.idle,
            hired=p.hired,
            at=p.at,
        )

    def standing(self, db: Session, owner: str) -> matching.Standing:
        rows = db.execute(
            select(Cluster.status, func.count())
            .where(Cluster.owner == owner)
            .group_by(Cluster.status)
        ).all()
        counts = {status: int(n) for status, n in rows}
        return matching.Standing(
            payments=sum(counts.values()),
            unpaid=0,
            early_terminations=counts.get(ClusterStatus.TERMINATED.value, 0),
            abuse_reports=0,
        )

    def requirements(
        self, db: Session, owner: str, req: DeployRequest, exclude: Iterable[str], quantity: int
    ) -> matching.Requirements:
        if req.hardware == "cpu":
            model, kind = None, "cpu"
        else:
            try:
                hw = self.catalog.get(req.hardware)
            except KeyError:
                raise InvalidRequest(
                    "unknown hardware model", hardware=req.hardware, hint="see `idlegrid catalog`"
                ) from None
            model, kind = hw.key, hw.kind.value
        return matching.Requirements(
            model=model,
            kind=kind,
            quantity=None if req.product == "mega-ray" else quantity,
            locations=frozenset(req.locations),
            min_tier=req.min_tier,
            suppliers=frozenset(req.suppliers),
            exclude=frozenset(exclude),
            max_reputation=matching.requester_limit(self.standing(db, owner)),
        )

    def candidates(
        self, db: Session, cap_micro_usd: int | None = None, renter: str | None = None
    ) -> tuple[list[matching.Candidate], dict[str, int]]:
        """Every device that could be hired now: up, live, ready and in no cluster,
        and (given a price cap) whose provider's floor is not above the price; with
        each device's floor in millionths of a USD.

        Only a sandboxed device is rentable by anyone: an unsandboxed one (``--no-sandbox``,
        or no backend on its machine) is a candidate only for its own owner (``renter``);
        the public view (``renter`` None, as for prices) has only sandboxed devices."""
        now = self.clock()
        live = [
            d
            for d in hireable_rows(db)  # plain rows: ORM objects per quote cost seconds
            if (d.sandbox_backend != "none" or (renter is not None and d.owner == renter))
            and self.liveness.is_live(d.id, now)
            and (cap_micro_usd is None or d.floor_micro_usd <= cap_micro_usd)
        ]
        history = proof_history(db, [d.id for d in live])
        floors = {d.id: d.floor_micro_usd for d in live}
        return [candidate(d, history, now) for d in live], floors

    def match(
        self,
        db: Session,
        owner: str,
        req: DeployRequest,
        exclude: Iterable[str],
        quantity: int | None = None,
        cap_micro_usd: int | None = None,
    ) -> matching.Match:
        reqs = self.requirements(db, owner, req, exclude, quantity or req.quantity)
        return self.find(db, owner, reqs, cap_micro_usd)

    def reload_index(self) -> None:
        """Re-read every hireable device into the index (its loop)."""
        if self.index is not None:
            self.index.reload()

    def hireable(
        self, db: Session, renter: str | None = None, cap_micro_usd: int | None = None
    ) -> tuple[list[matching.Candidate], dict[str, int]]:
        """``candidates``, from the index when there is one."""
        if self.index is None:
            return self.candidates(db, cap_micro_usd, renter)
        return self.index.candidates(db, renter, cap_micro_usd)

    def find(
        self,
        db: Session,
        owner: str,
        reqs: matching.Requirements,
        cap_micro_usd: int | None = None,
    ) -> matching.Match:
        """The match of ``reqs`` among the devices ``owner`` may hire under the cap (from
        the index when there is one), or ``NoMatchingDevices``."""
        if self.index is None:
            return self.match_or_refuse(self.candidates(db, cap_micro_usd, owner)[0], reqs)
        return _found_or_refuse(self.index.match(db, reqs, owner, cap_micro_usd), reqs)

    @staticmethod
    def match_or_refuse(
        candidates: list[matching.Candidate], reqs: matching.Requirements
    ) -> matching.Match:
        """``matching.match``, or ``NoMatchingDevices`` (with its explanation) if too few."""
        return _found_or_refuse(matching.match(candidates, reqs), reqs)

    def base_usd(self, req: DeployRequest, devices: Iterable[matching.Candidate]) -> Decimal:
        """The list price of one device-hour (``core/clusters.list_price_usd``)."""
        if req.hardware == "cpu":
            return list_price_usd(0.0, 1, "cpu")
        hw = self.catalog.get(req.hardware)
        processors = max((c.processors for c in devices), default=1)
        return list_price_usd(hw.multiplier, processors, hw.kind.value)

    # -- reservation ------------------------------------------------------------------------
    def reserve(
        self,
        db: Session,
        owner: str,
        req: DeployRequest,
        cluster_id: str,
        wanted: int,
        exclude: set[str],
        cap_micro_usd: int | None = None,
    ) -> list[Device]:
        """Take up to ``wanted`` matching devices for ``cluster_id`` (none whose
        floor is above ``cap_micro_usd``), as the module's docstring says."""
        taken: list[Device] = []
        skip = set(exclude)
        for _ in range(RESERVE_ATTEMPTS):
            need = wanted - len(taken)
            if need <= 0:
                break
            try:
                found = self.match(db, owner, req, skip, need, cap_micro_usd)
            except NoMatchingDevices:
                break
            ids = [c.device_id for c in found.devices][:need]
            skip.update(ids)
            if db.get_bind().dialect.name == "postgresql":
                locked = set(
                    db.scalars(
                        select(Device.id)
                        .where(Device.id.in_(ids), Device.cluster_id.is_(None))
                        .with_for_update(skip_locked=True)
                    )
                )
                ids = [i for i in ids if i in locked]
            for device_id in ids:
                result = db.execute(
                    update(Device)
                    .where(Device.id == device_id, Device.cluster_id.is_(None))
                    .values(cluster_id=cluster_id, readiness=Readiness.HIRED.value)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    mark_changed(db, [device_id])
                    dev = db.get(Device, device_id)
                    assert dev is not None
                    db.refresh(dev)
                    taken.append(dev)
        return taken

    def release(self, db: Session, device_id: str, cluster_id: str) -> None:
        mark_changed(db, [device_id])
        db.execute(
            update(Device)
            .where(Device.id == device_id, Device.cluster_id == cluster_id)
            .values(cluster_id=None, readiness=Readiness.CLUSTER_READY.value)
            .execution_options(synchronize_session=False)
        )


def _found_or_refuse(found: matching.Match, reqs: matching.Requirements) -> matching.Match:
    if not found.ok:
        raise NoMatchingDevices(
            "no devices match the request",
            wanted=reqs.quantity or 1,
            explain=found.explain.as_dict(),
        )
    return found
