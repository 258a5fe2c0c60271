"""IO Cloud: quotes, deploys, cluster forming, healing, expiry and the bill.

Each public method is one database transaction; the rules live in the pure
core (``core/matching.py`` picks devices, ``core/clusters.py`` does the bill).

Reservation: a device is taken by ``UPDATE devices SET cluster_id = :c WHERE
id = :d AND cluster_id IS NULL``. On PostgreSQL the chosen rows are first
locked with ``SELECT … FOR UPDATE SKIP LOCKED``: a racing deploy never waits
on (or deadlocks with) another, it just matches again without the devices it
could not lock. On SQLite every write transaction holds the database's write
lock from its first statement (``BEGIN IMMEDIATE``), which serialises deploys.
Payment goes into escrow in the same transaction, so a deploy that cannot pay
reserves nothing, and one that finds too few devices charges nothing.

Forming: a reserved device learns its assignment (cluster, generation, role,
Ray token, head address) from its next heartbeat reply. The head agent starts
``ray start --head`` and reports its ports at once; workers then get the
head's address and start alongside it (``ray start --address`` waits for the
head's control store). The cluster is ``running`` when every node reported up.

Healing: a node whose device stops heartbeating is closed at the device's last
heartbeat (it is paid up to then, not after), the device is released, and a
replacement is hired with the same requirements when one exists; it joins the
same Ray cluster. If the head died, the cluster is re-formed under a new head
(a new generation: every agent restarts its node). With no replacement, the
slot's unused prepaid time goes back to the buyer at once.

Heartbeat replies read assignments from memory (``assignments``), rebuilt for
a cluster after each change; one control-plane process owns them (see
docs/architecture.md on replicas).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.catalog import Catalog
from idlegrid.core import clusters as bill
from idlegrid.core import matching, pricing
from idlegrid.core.clusters import ACTIVE, ClusterStatus, DurationUnit
from idlegrid.core.fees import DECIMALS, format_amount
from idlegrid.core.ledger import Transfer
from idlegrid.errors import (
    ClusterNotActive,
    InvalidApiKey,
    InvalidRequest,
    NoMatchingDevices,
    NotYourDevice,
    QuoteExpired,
    QuoteUsed,
    UnknownCluster,
    UnknownDevice,
    UnknownQuote,
)
from idlegrid.protocol import (
    ApiKeyView,
    Assignment,
    ClusterNodeView,
    ClusterView,
    DeployRequest,
    DeviceStatus,
    PriceItem,
    ProofStatus,
    QuoteView,
    RayNodeReport,
    Readiness,
)
from idlegrid.server.db.bulk import chunks
from idlegrid.server.db.models import (
    ApiKey,
    Cluster,
    ClusterNode,
    Device,
    PricePoint,
    Proof,
    Quote,
)
from idlegrid.server.liveness import LivenessTable
from idlegrid.server.services.ledger import LedgerService, fees_account, user_account
from idlegrid.server.settings import ServerSettings

log = logging.getLogger("idlegrid.server.clusters")

RESERVE_ATTEMPTS = 8


def cluster_escrow(cluster_id: str, asset: str) -> str:
    return f"escrow:cluster:{cluster_id}:{asset}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _ms(t: float) -> int:
    return round(t * 1000)


class ClusterService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        ledger: LedgerService,
        liveness: LivenessTable,
        catalog: Catalog,
        settings: ServerSettings,
        clock: Callable[[], float],
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.liveness = liveness
        self.catalog = catalog
        self.settings = settings
        self.clock = clock
        self.assignments: dict[str, Assignment] = {}
        self._key_owners: dict[str, str] = {}
        self._last_settle = clock()
        self._tick_lock = threading.Lock()
        self._postgres = sessions.kw["bind"].dialect.name == "postgresql"

    # -- API keys ---------------------------------------------------------------------

    def create_api_key(self, owner: str, name: str) -> ApiKeyView:
        key_id = secrets.token_hex(4)
        key = f"ig_{key_id}_{secrets.token_urlsafe(32)}"
        now = self.clock()
        with self.sessions.begin() as db:
            db.add(
                ApiKey(id=key_id, owner=owner, name=name, key_hash=hash_key(key), created_at=now)
            )
        return ApiKeyView(id=key_id, name=name, owner=owner, created_at=now, key=key)

    def owner_of_key(self, key: str) -> str:
        digest = hash_key(key)
        owner = self._key_owners.get(digest)
        if owner is None:
            with self.sessions() as db:
                row = db.scalar(
                    select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
                )
            if row is None:
                raise InvalidApiKey()
            owner = self._key_owners[digest] = row.owner
        return owner

    # -- quotes and deploys -----------------------------------------------------------

    def quote(self, owner: str, req: DeployRequest) -> QuoteView:
        """Match now and price the request (``core/pricing.py``): dynamic, or an
        auction when the buyer names a maximum. Nothing is reserved yet."""
        hours = bill.duration_hours(req.duration, DurationUnit(req.duration_unit))
        now = self.clock()
        with self.sessions.begin() as db:
            candidates, floors = self._candidates(db)
            reqs = self._requirements(db, owner, req, (), req.quantity)
            found = self._found(candidates, reqs)
            devices = len(found.devices) if req.product == "mega-ray" else req.quantity
            if req.max_price_usd is not None:
                breakdown = self._auction(req, reqs, candidates, floors, devices, hours)
            else:
                breakdown = pricing.price(
                    pricing.PriceRequest(
                        base_usd=self._base_usd(req, found.devices),
                        devices=devices,
                        hours=hours,
                        market=self._market(db, reqs, candidates),
                        urgency=pricing.Urgency(req.start),
                        min_tier=req.min_tier,
                        location_constrained=bool(req.locations),
                        secure=req.secure,
                    ),
                    req.currency,
                    self.ledger.oracle.io_usd(),
                )
                cap = self._micro_usd(breakdown.per_device_hour, req.currency)
                found = self._found([c for c in candidates if floors[c.device_id] <= cap], reqs)
            quote = Quote(
                id=secrets.token_hex(16),
                owner=owner,
                request=req.model_dump(mode="json"),
                currency=req.currency,
                price=breakdown.per_device_hour,
                devices=devices,
                hours=hours,
                created_at=now,
                expires_at=now + self.settings.quote_ttl_s,
            )
            db.add(quote)
            return self._quote_view(quote, breakdown, found.explain.as_dict())

    def _auction(
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
        try:
            max_usd = Decimal(req.max_price_usd or "")
        except ArithmeticError:
            raise InvalidRequest(
                "max_price_usd is a decimal number", value=req.max_price_usd
            ) from None
        if not max_usd.is_finite() or max_usd <= 0:
            raise InvalidRequest("max_price_usd must be positive", value=req.max_price_usd)
        eligible = matching.match(candidates, replace(reqs, quantity=None))
        base = self._base_usd(req, eligible.devices)
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
        units = pricing.to_units(clearing, req.currency, self.ledger.oracle.io_usd())
        item = pricing.Item("auction", max(1, units), f"highest accepted ask {clearing} USD")
        return pricing.Breakdown(req.currency, (item,), devices, hours)

    def _market(
        self, db: Session, reqs: matching.Requirements, candidates: list[matching.Candidate]
    ) -> pricing.Market:
        """Idle and hired devices of the requested hardware in the requested regions."""
        idle = sum(
            1
            for c in candidates
            if (reqs.kind is None or c.kind == reqs.kind)
            and (reqs.model is None or c.model == reqs.model)
            and (not reqs.locations or c.location in reqs.locations)
        )
        q = select(func.count()).select_from(Device).where(Device.cluster_id.is_not(None))
        if reqs.model is not None:
            q = q.where(Device.model == reqs.model)
        elif reqs.kind is not None:
            q = q.where(Device.kind == reqs.kind)
        if reqs.locations:
            q = q.where(Device.location.in_(reqs.locations))
        return pricing.Market(idle=idle, hired=int(db.scalar(q) or 0))

    def _micro_usd(self, units: int, currency: str) -> int:
        """A price in ``currency`` units, in millionths of a USD at the oracle's rate,
        rounded up: a price converted from USD to IO units and back must still
        reach the floor it was computed against."""
        usd = Decimal(units).scaleb(-DECIMALS[currency])
        if currency == "IO":
            usd *= self.ledger.oracle.io_usd()
        return int((usd * 10**6).to_integral_value(rounding=ROUND_CEILING))

    def deploy(self, owner: str, quote_id: str) -> ClusterView:
        """Pay the quote into escrow and reserve its devices, atomically."""
        now = self.clock()
        with self.sessions.begin() as db:
            quote = db.get(Quote, quote_id, with_for_update=True)
            if quote is None or quote.owner != owner:
                raise UnknownQuote(quote_id=quote_id)
            if quote.cluster_id is not None:
                raise QuoteUsed(quote_id=quote_id, cluster_id=quote.cluster_id)
            if now > quote.expires_at:
                raise QuoteExpired(quote_id=quote_id, expired_at=quote.expires_at)
            req = DeployRequest.model_validate(quote.request)
            cluster_id = secrets.token_hex(16)
            cap = self._micro_usd(quote.price, quote.currency)
            chosen = self._reserve(db, owner, req, cluster_id, quote.devices, set(), cap)
            if len(chosen) < quote.devices:
                raise NoMatchingDevices(
                    "not enough devices are free now",
                    wanted=quote.devices,
                    found=len(chosen),
                )
            pay = bill.prepayment(quote.price, quote.devices, quote.hours, quote.currency)
            cluster = Cluster(
                id=cluster_id,
                owner=owner,
                name=req.name,
                type=req.type,
                product=req.product,
                request=quote.request,
                status=ClusterStatus.DEPLOYMENT_REQUESTED.value,
                currency=quote.currency,
                price=quote.price,
                quantity=quote.devices,
                hours=quote.hours,
                paid=0,
                charged=0,
                refunded=0,
                payments=0,
                token=secrets.token_hex(32),
                generation=0,
                head_device=chosen[0].id,
                created_at=now,
                deploy_deadline=now + self.settings.deploy_timeout_s,
            )
            db.add(cluster)
            db.flush()
            self._pay(db, cluster, pay.total)
            for i, dev in enumerate(chosen):
                db.add(self._node(cluster, dev, "head" if i == 0 else "worker"))
            quote.cluster_id = cluster_id
            db.flush()
            view = self._view(db, cluster, with_secrets=True)
        self._refresh_assignments(cluster_id)
        log.info("cluster %s: %d devices reserved, %s paid", cluster_id, len(chosen), view.paid)
        return view

    def extend(self, owner: str, cluster_id: str, amount: int, unit: DurationUnit) -> ClusterView:
        hours = bill.duration_hours(amount, unit)
        with self.sessions.begin() as db:
            cluster = self._own(db, owner, cluster_id, lock=True)
            if ClusterStatus(cluster.status) not in ACTIVE:
                raise ClusterNotActive(cluster_id=cluster_id, status=cluster.status)
            pay = bill.prepayment(cluster.price, cluster.quantity, hours, cluster.currency)
            self._pay(db, cluster, pay.total)
            cluster.hours += hours
            if cluster.expires_at is not None:
                cluster.expires_at += hours * 3600
            return self._view(db, cluster, with_secrets=True)

    def terminate(self, owner: str, cluster_id: str) -> ClusterView:
        """End the cluster now: providers are paid to now, the rest is refunded."""
        with self.sessions.begin() as db:
            cluster = self._own(db, owner, cluster_id, lock=True)
            if ClusterStatus(cluster.status) not in ACTIVE:
                raise ClusterNotActive(cluster_id=cluster_id, status=cluster.status)
            self._close(db, cluster, ClusterStatus.TERMINATED, self.clock(), "terminated by owner")
            view = self._view(db, cluster, with_secrets=False)
        self._refresh_assignments(cluster_id)
        return view

    # -- prices -----------------------------------------------------------------------------

    def set_floor(self, signer: str, device_id: str, usd: Decimal) -> int:
        """The owner's floor for a device, per device-hour (0 removes it)."""
        if not usd.is_finite() or usd < 0 or usd > 10_000:
            raise InvalidRequest("a floor is 0-10,000 USD per device-hour", usd=str(usd))
        with self.sessions.begin() as db:
            dev = db.get(Device, device_id, with_for_update=True)
            if dev is None:
                raise UnknownDevice(device_id=device_id)
            if signer != dev.owner:
                raise NotYourDevice("only the device's owner sets its floor", owner=dev.owner)
            dev.floor_micro_usd = int(usd * 10**6)
            return dev.floor_micro_usd

    def current_prices(self) -> list[tuple[str, str, int, pricing.Market]]:
        """(model, location or "*", micro-USD, market) of a 1-device, 1-hour request now,
        for every model with ready devices, per region and for all regions."""
        out = []
        with self.sessions() as db:
            candidates, _ = self._candidates(db)
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
        for model, location in sorted(set(idle) | set(busy)):
            hw = self.catalog.get(model)
            base = bill.list_price_usd(hw.multiplier, 1, hw.kind.value)
            market = pricing.Market(
                idle=idle.get((model, location), 0), hired=busy.get((model, location), 0)
            )
            bd = pricing.price(
                pricing.PriceRequest(base, 1, 1, market, location_constrained=location != "*"),
                "USDC",
                Decimal(1),
            )
            out.append((model, location, bd.per_device_hour, market))
        return out

    def record_prices(self) -> int:
        """Append the current prices to the price history (the prices loop)."""
        now = self.clock()
        rows = [
            PricePoint(
                at=now,
                model=model,
                location=location,
                micro_usd=micro,
                utilisation=float(market.utilisation()),
                idle=market.idle,
                hired=market.hired,
            )
            for model, location, micro, market in self.current_prices()
        ]
        with self.sessions.begin() as db:
            db.add_all(rows)
        return len(rows)

    # -- reads --------------------------------------------------------------------------

    def get(self, owner: str, cluster_id: str) -> ClusterView:
        with self.sessions() as db:
            return self._view(db, self._own(db, owner, cluster_id), with_secrets=True)

    def list_clusters(self, owner: str, active_only: bool = False) -> list[ClusterView]:
        with self.sessions() as db:
            q = select(Cluster).where(Cluster.owner == owner).order_by(Cluster.created_at.desc())
            if active_only:
                q = q.where(Cluster.status.in_([s.value for s in ACTIVE]))
            return [self._view(db, c, with_secrets=True) for c in db.scalars(q)]

    def list_public(self, limit: int) -> list[ClusterView]:
        """The newest clusters of every buyer, without their token (the explorer)."""
        with self.sessions() as db:
            q = select(Cluster).order_by(Cluster.created_at.desc()).limit(limit)
            return [self._view(db, c, with_secrets=False) for c in db.scalars(q)]

    # -- agents -------------------------------------------------------------------------

    def report_node(self, device_id: str, rep: RayNodeReport) -> Assignment | None:
        """An agent's word on its Ray node; returns its current assignment."""
        now = self.clock()
        with self.sessions.begin() as db:
            cluster = db.get(Cluster, rep.cluster_id, with_for_update=True)
            node = None
            if cluster is not None:
                node = db.scalar(
                    select(ClusterNode).where(
                        ClusterNode.cluster_id == cluster.id,
                        ClusterNode.device_id == device_id,
                        ClusterNode.left_ms.is_(None),
                    )
                )
            if cluster is None or node is None:
                served = cluster is not None and db.scalar(
                    select(ClusterNode.id).where(
                        ClusterNode.cluster_id == cluster.id, ClusterNode.device_id == device_id
                    )
                )
                if not served:
                    raise NotYourDevice(
                        "this device never served that cluster", device_id=device_id
                    )
                return self.assignments.get(device_id)  # it has left: nothing to record
            if node.generation != rep.generation or ClusterStatus(cluster.status) not in ACTIVE:
                return self.assignments.get(device_id)  # stale: the agent catches up
            node.state = rep.state
            if node.role == "head" and rep.state in ("starting", "up") and rep.gcs_port:
                # Known as soon as the head starts: workers start in parallel and
                # wait for its control store (about half the time to running).
                cluster.node_ip = rep.node_ip
                cluster.gcs_port = rep.gcs_port
                cluster.dashboard_port = rep.dashboard_port
                cluster.client_port = rep.client_port
            if rep.state == "up":
                node.up_at = now
                self._maybe_running(db, cluster, now)
            elif rep.state == "starting" and cluster.status == "deployment_requested":
                cluster.status = ClusterStatus.DEPLOYING.value
            elif rep.state in ("failed", "stopped"):
                log.warning(
                    "cluster %s: node %s %s: %s", cluster.id, device_id, rep.state, rep.error
                )
                self._lose_node(db, cluster, node, now, f"ray {rep.state}")
        self._refresh_assignments(rep.cluster_id)
        return self.assignments.get(device_id)

    # -- the loop ------------------------------------------------------------------------

    def tick(self) -> None:
        """Watch deploys, heal, expire and settle; one transaction per cluster."""
        with self._tick_lock:
            now = self.clock()
            with self.sessions() as db:
                active = list(
                    db.scalars(
                        select(Cluster.id).where(Cluster.status.in_([s.value for s in ACTIVE]))
                    )
                )
            for cluster_id in active:
                try:
                    self._tick_cluster(cluster_id, now)
                except Exception:
                    log.exception("cluster %s: tick failed", cluster_id)
            if now - self._last_settle >= self.settings.settle_interval_s:
                self.settle(now)
                self._last_settle = now

    def settle(self, now: float | None = None) -> int:
        """Pay every node what it earned up to ``now`` (the hourly settlement)."""
        now = self.clock() if now is None else now
        paid = 0
        with self.sessions() as db:
            ids = list(
                db.scalars(select(ClusterNode.cluster_id).where(~ClusterNode.settled).distinct())
            )
        for cluster_id in ids:
            with self.sessions.begin() as db:
                cluster = db.get(Cluster, cluster_id, with_for_update=True)
                assert cluster is not None
                paid += self._settle_cluster(db, cluster, _ms(now))
        return paid

    def load(self) -> None:
        """Rebuild the in-memory assignments from the database (at start-up)."""
        with self.sessions() as db:
            ids = list(
                db.scalars(select(Cluster.id).where(Cluster.status.in_([s.value for s in ACTIVE])))
            )
        for cluster_id in ids:
            self._refresh_assignments(cluster_id)

    # -- internals: matching and reservation --------------------------------------------

    def _standing(self, db: Session, owner: str) -> matching.Standing:
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

    def _requirements(
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
            max_reputation=matching.requester_limit(self._standing(db, owner)),
        )

    def _candidates(
        self, db: Session, cap_micro_usd: int | None = None
    ) -> tuple[list[matching.Candidate], dict[str, int]]:
        """Every device that could be hired now: up, live, ready and in no cluster,
        and (given a price cap) whose provider's floor is not above the price; with
        each device's floor in millionths of a USD."""
        now = self.clock()
        rows = db.scalars(
            select(Device).where(
                Device.status == DeviceStatus.UP.value,
                Device.readiness == Readiness.CLUSTER_READY.value,
                Device.cluster_id.is_(None),
                Device.model.is_not(None),
            )
        )
        live = [
            d
            for d in rows
            if self.liveness.is_live(d.id, now)
            and (cap_micro_usd is None or d.floor_micro_usd <= cap_micro_usd)
        ]
        floors = {d.id: d.floor_micro_usd for d in live}
        history = self._proof_history(db, [d.id for d in live])
        out = []
        for d in live:
            passed, failed = history.get(d.id, (0, 0))
            out.append(
                matching.Candidate(
                    device_id=d.id,
                    kind=d.kind,
                    model=d.model or "",
                    location=d.location,
                    tier=d.tier or 0,
                    supplier=d.owner,
                    processors=d.processors,
                    reputation=matching.device_reputation(
                        min(1.0, d.uptime_s / max(1.0, now - d.registered_at)), passed, failed
                    ),
                )
            )
        return out, floors

    @staticmethod
    def _proof_history(db: Session, device_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(proofs passed, proofs failed) per device."""
        out: dict[str, tuple[int, int]] = {}
        for chunk in chunks(device_ids, 5_000):
            rows = db.execute(
                select(Proof.device_id, Proof.status, func.count())
                .where(
                    Proof.device_id.in_(chunk),
                    Proof.status.in_([ProofStatus.VERIFIED.value, ProofStatus.FAILED.value]),
                )
                .group_by(Proof.device_id, Proof.status)
            ).all()
            for device_id, status, n in rows:
                passed, failed = out.get(device_id, (0, 0))
                if status == ProofStatus.VERIFIED.value:
                    passed += int(n)
                else:
                    failed += int(n)
                out[device_id] = (passed, failed)
        return out

    def _match(
        self,
        db: Session,
        owner: str,
        req: DeployRequest,
        exclude: Iterable[str],
        quantity: int | None = None,
        cap_micro_usd: int | None = None,
    ) -> matching.Match:
        reqs = self._requirements(db, owner, req, exclude, quantity or req.quantity)
        return self._found(self._candidates(db, cap_micro_usd)[0], reqs)

    @staticmethod
    def _found(candidates: list[matching.Candidate], reqs: matching.Requirements) -> matching.Match:
        found = matching.match(candidates, reqs)
        if not found.ok:
            raise NoMatchingDevices(
                "no devices match the request",
                wanted=reqs.quantity or 1,
                explain=found.explain.as_dict(),
            )
        return found

    def _reserve(
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
        floor is above ``cap_micro_usd``)."""
        taken: list[Device] = []
        skip = set(exclude)
        for _ in range(RESERVE_ATTEMPTS):
            need = wanted - len(taken)
            if need <= 0:
                break
            try:
                found = self._match(db, owner, req, skip, need, cap_micro_usd)
            except NoMatchingDevices:
                break
            ids = [c.device_id for c in found.devices][:need]
            skip.update(ids)
            if self._postgres:
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
                    dev = db.get(Device, device_id)
                    assert dev is not None
                    db.refresh(dev)
                    taken.append(dev)
        return taken

    def _release(self, db: Session, device_id: str, cluster_id: str) -> None:
        db.execute(
            update(Device)
            .where(Device.id == device_id, Device.cluster_id == cluster_id)
            .values(cluster_id=None, readiness=Readiness.CLUSTER_READY.value)
            .execution_options(synchronize_session=False)
        )

    def _node(self, cluster: Cluster, dev: Device, role: str) -> ClusterNode:
        return ClusterNode(
            cluster_id=cluster.id,
            device_id=dev.id,
            payee=dev.owner,
            role=role,
            generation=cluster.generation,
            state="reserved",
            paid_gross=0,
            settled=False,
        )

    # -- internals: money ----------------------------------------------------------------

    def _pay(self, db: Session, cluster: Cluster, amount: int) -> None:
        """Move a prepayment from the buyer's balance into the cluster's escrow."""
        asset = cluster.currency
        escrow = cluster_escrow(cluster.id, asset)
        self.ledger.book.open_account(db, escrow, asset)
        cluster.payments += 1
        self.ledger.book.post(
            db,
            Transfer(
                f"escrow:{cluster.id}:{cluster.payments}",
                user_account(cluster.owner, asset),
                escrow,
                asset,
                amount,
                code="escrow",
                memo=f"cluster {cluster.name}",
            ),
        )
        cluster.paid += amount

    def _settle_cluster(self, db: Session, cluster: Cluster, now_ms: int) -> int:
        asset = cluster.currency
        escrow = cluster_escrow(cluster.id, asset)
        expires_ms = _ms(cluster.expires_at) if cluster.expires_at is not None else now_ms
        paid = 0
        nodes = db.scalars(
            select(ClusterNode).where(ClusterNode.cluster_id == cluster.id, ~ClusterNode.settled)
        )
        for node in nodes:
            if node.joined_ms is None:
                if node.left_ms is not None:
                    node.settled = True  # never joined: nothing earned
                continue
            until = min(now_ms, expires_ms, node.left_ms if node.left_ms is not None else now_ms)
            s = bill.settle_slice(cluster.price, node.joined_ms, until, node.paid_gross, asset)
            if s.gross > 0:
                payee = user_account(node.payee, asset)
                self.ledger.book.open_account(db, payee, asset)
                tag = f"{cluster.id}:{node.id}:{until}"
                transfers = [
                    Transfer(f"pay:{tag}", escrow, payee, asset, s.provider, code="payout")
                ]
                if s.fee:
                    transfers.append(
                        Transfer(
                            f"fee:{tag}", escrow, fees_account(asset), asset, s.fee, code="fee"
                        )
                    )
                self.ledger.book.post_batch(db, transfers)
                node.paid_gross += s.gross
                cluster.charged += s.gross
                paid += s.gross
            if node.left_ms is not None and until >= min(node.left_ms, expires_ms):
                node.settled = True
        return paid

    def _close(
        self, db: Session, cluster: Cluster, status: ClusterStatus, at: float, reason: str
    ) -> None:
        """End the cluster at ``at``: close nodes, settle, take the buyer's fee, refund."""
        at_ms = _ms(at)
        if cluster.expires_at is not None:
            at_ms = min(at_ms, _ms(cluster.expires_at))
        for node in self._open_nodes(db, cluster):
            node.left_ms = at_ms
            node.left_reason = reason
            node.state = "stopped"
            self._release(db, node.device_id, cluster.id)
        self._settle_cluster(db, cluster, at_ms)
        asset = cluster.currency
        escrow = cluster_escrow(cluster.id, asset)
        left = self.ledger.book.account(db, escrow).available
        closing = bill.close(left, cluster.charged, asset)
        transfers = []
        if closing.buyer_fee:
            transfers.append(
                Transfer(
                    f"buyer-fee:{cluster.id}",
                    escrow,
                    fees_account(asset),
                    asset,
                    closing.buyer_fee,
                    code="fee",
                )
            )
        if closing.refund:
            transfers.append(
                Transfer(
                    f"refund:{cluster.id}",
                    escrow,
                    user_account(cluster.owner, asset),
                    asset,
                    closing.refund,
                    code="refund",
                )
            )
        if transfers:
            self.ledger.book.post_batch(db, transfers)
        cluster.refunded += closing.refund
        cluster.status = status.value
        cluster.reason = reason
        cluster.ended_at = at
        cluster.token = None  # the cluster is gone; its token dies with it
        log.info("cluster %s %s (%s)", cluster.id, status.value, reason)

    # -- internals: forming and healing --------------------------------------------------

    def _open_nodes(self, db: Session, cluster: Cluster) -> list[ClusterNode]:
        return list(
            db.scalars(
                select(ClusterNode)
                .where(ClusterNode.cluster_id == cluster.id, ClusterNode.left_ms.is_(None))
                .order_by(ClusterNode.id)
            )
        )

    def _maybe_running(self, db: Session, cluster: Cluster, now: float) -> None:
        nodes = self._open_nodes(db, cluster)
        if not nodes or any(n.state != "up" for n in nodes):
            if cluster.status == ClusterStatus.DEPLOYMENT_REQUESTED.value:
                cluster.status = ClusterStatus.DEPLOYING.value
            return
        if cluster.running_at is None:
            cluster.running_at = now
            cluster.expires_at = now + cluster.hours * 3600
        cluster.status = ClusterStatus.RUNNING.value
        for n in nodes:
            if n.joined_ms is None:
                n.joined_ms = _ms(now)

    def _tick_cluster(self, cluster_id: str, now: float) -> None:
        changed = False
        with self.sessions.begin() as db:
            cluster = db.get(Cluster, cluster_id, with_for_update=True)
            if cluster is None or ClusterStatus(cluster.status) not in ACTIVE:
                return
            if cluster.expires_at is not None and now >= cluster.expires_at:
                self._close(db, cluster, ClusterStatus.COMPLETED, cluster.expires_at, "expired")
                changed = True
            elif (
                cluster.running_at is None
                and cluster.deploy_deadline is not None
                and now > cluster.deploy_deadline
            ):
                self._close(db, cluster, ClusterStatus.FAILED, now, "deploy timed out")
                changed = True
            else:
                for node in self._open_nodes(db, cluster):
                    dev = self.liveness.get(node.device_id)
                    alive = (
                        dev is not None
                        and dev.status is DeviceStatus.UP
                        and self.liveness.is_live(node.device_id, now)
                    )
                    if not alive:
                        last = dev.last_seen if dev is not None and dev.last_seen else now
                        self._lose_node(db, cluster, node, min(now, last), "device down")
                        changed = True
        if changed:
            self._refresh_assignments(cluster_id)

    def _lose_node(
        self, db: Session, cluster: Cluster, node: ClusterNode, at: float, reason: str
    ) -> None:
        """Close a node that stopped serving, release its device, and heal."""
        at_ms = _ms(at)
        if node.joined_ms is not None:
            at_ms = max(at_ms, node.joined_ms)
        node.left_ms = at_ms
        node.left_reason = reason
        node.state = "failed"
        self._release(db, node.device_id, cluster.id)
        was_head = node.role == "head"
        log.warning("cluster %s: lost %s %s (%s)", cluster.id, node.role, node.device_id, reason)
        served = set(
            db.scalars(select(ClusterNode.device_id).where(ClusterNode.cluster_id == cluster.id))
        )
        req = DeployRequest.model_validate(cluster.request)
        survivors = self._open_nodes(db, cluster)
        cap = self._micro_usd(cluster.price, cluster.currency)
        replacement = self._reserve(db, cluster.owner, req, cluster.id, 1, served, cap)
        if was_head:
            # Ray's GCS lived on the head: re-form the cluster under a new head.
            cluster.generation += 1
            cluster.node_ip = cluster.gcs_port = None
            cluster.dashboard_port = cluster.client_port = None
            members = [*survivors]
            for i, n in enumerate(members):
                n.generation = cluster.generation
                n.role = "head" if i == 0 else "worker"
                n.state = "reserved"
            cluster.head_device = members[0].device_id if members else None
        for dev in replacement:
            new = self._node(cluster, dev, "worker" if cluster.head_device else "head")
            db.add(new)
            if cluster.head_device is None:
                cluster.head_device = dev.id
        if replacement:
            cluster.status = (
                ClusterStatus.DEPLOYING.value
                if cluster.running_at is None or was_head
                else cluster.status
            )
            return
        if not survivors:
            db.flush()
            self._close(db, cluster, ClusterStatus.FAILED, at, "every device was lost")
            return
        if cluster.expires_at is not None:
            # No replacement: the slot's unused prepaid time goes back now.
            refund = bill.slot_refund(cluster.price, at_ms, _ms(cluster.expires_at))
            escrow = cluster_escrow(cluster.id, cluster.currency)
            refund = min(refund, self.ledger.book.account(db, escrow).available)
            if refund > 0:
                self.ledger.book.post(
                    db,
                    Transfer(
                        f"slot-refund:{cluster.id}:{node.id}",
                        escrow,
                        user_account(cluster.owner, cluster.currency),
                        cluster.currency,
                        refund,
                        code="refund",
                        memo=f"device {node.device_id} lost, no replacement",
                    ),
                )
                cluster.refunded += refund
        cluster.quantity = len(survivors)
        if was_head:
            cluster.status = ClusterStatus.DEPLOYING.value

    def _refresh_assignments(self, cluster_id: str) -> None:
        with self.sessions() as db:
            cluster = db.get(Cluster, cluster_id)
            if cluster is None:
                return
            nodes = list(
                db.scalars(select(ClusterNode).where(ClusterNode.cluster_id == cluster_id))
            )
            active = ClusterStatus(cluster.status) in ACTIVE
            head = (
                f"{cluster.node_ip}:{cluster.gcs_port}"
                if cluster.node_ip and cluster.gcs_port
                else None
            )
            for node in nodes:
                current = self.assignments.get(node.device_id)
                if node.left_ms is None and active and cluster.token:
                    self.assignments[node.device_id] = Assignment(
                        cluster_id=cluster.id,
                        generation=node.generation,
                        role="head" if node.role == "head" else "worker",
                        token=cluster.token,
                        head_address=head,
                    )
                elif current is not None and current.cluster_id == cluster_id:
                    del self.assignments[node.device_id]

    # -- internals: views ----------------------------------------------------------------

    def _own(self, db: Session, owner: str, cluster_id: str, lock: bool = False) -> Cluster:
        cluster = db.get(Cluster, cluster_id, with_for_update=lock)
        if cluster is None or cluster.owner != owner:
            raise UnknownCluster(cluster_id=cluster_id)
        return cluster

    def _base_usd(self, req: DeployRequest, devices: Iterable[matching.Candidate]) -> Decimal:
        """The list price of one device-hour (``core/clusters.list_price_usd``)."""
        if req.hardware == "cpu":
            return bill.list_price_usd(0.0, 1, "cpu")
        hw = self.catalog.get(req.hardware)
        processors = max((c.processors for c in devices), default=1)
        return bill.list_price_usd(hw.multiplier, processors, hw.kind.value)

    def _quote_view(self, q: Quote, bd: pricing.Breakdown, explain: dict[str, int]) -> QuoteView:
        pay = bill.prepayment(q.price, q.devices, q.hours, q.currency)
        cur = q.currency
        return QuoteView(
            id=q.id,
            request=DeployRequest.model_validate(q.request),
            devices=q.devices,
            hours=q.hours,
            currency=cur,  # type: ignore[arg-type]
            price_per_device_hour=format_amount(q.price, cur),
            subtotal=format_amount(pay.subtotal, cur),
            buyer_fee=format_amount(pay.buyer_fee, cur),
            total=format_amount(pay.total, cur),
            usd_per_device_hour=f"{Decimal(self._micro_usd(q.price, cur)) / 10**6:.4f}",
            mode="auction" if q.request.get("max_price_usd") else "dynamic",
            breakdown=[
                PriceItem(
                    name=i.name,
                    per_device_hour=format_amount(i.units, cur),
                    total=format_amount(i.units * q.devices * q.hours, cur),
                    detail=i.detail,
                )
                for i in bd.items
            ],
            io_usd=str(self.ledger.oracle.io_usd()),
            expires_at=q.expires_at,
            explain=explain,
        )

    def _view(self, db: Session, c: Cluster, with_secrets: bool) -> ClusterView:
        cur = c.currency
        nodes = list(
            db.scalars(
                select(ClusterNode).where(ClusterNode.cluster_id == c.id).order_by(ClusterNode.id)
            )
        )
        devices: dict[str, Any] = {
            d.id: d
            for d in db.scalars(select(Device).where(Device.id.in_([n.device_id for n in nodes])))
        }
        up = c.node_ip and c.gcs_port and c.status == ClusterStatus.RUNNING.value
        now = self.clock()
        return ClusterView(
            id=c.id,
            name=c.name,
            owner=c.owner,
            type=c.type,  # type: ignore[arg-type]
            product=c.product,  # type: ignore[arg-type]
            status=c.status,
            hardware=str(c.request.get("hardware")),
            quantity=c.quantity,
            currency=cur,  # type: ignore[arg-type]
            price_per_device_hour=format_amount(c.price, cur),
            hours=c.hours,
            paid=format_amount(c.paid, cur),
            charged=format_amount(c.charged, cur),
            refunded=format_amount(c.refunded, cur),
            created_at=c.created_at,
            running_at=c.running_at,
            expires_at=c.expires_at,
            ended_at=c.ended_at,
            remaining_s=(
                max(0.0, c.expires_at - now)
                if c.expires_at is not None and ClusterStatus(c.status) in ACTIVE
                else None
            ),
            generation=c.generation,
            reason=c.reason,
            nodes=[
                ClusterNodeView(
                    device_id=n.device_id,
                    role="head" if n.role == "head" else "worker",
                    generation=n.generation,
                    state=n.state,
                    model=devices[n.device_id].model if n.device_id in devices else None,
                    location=devices[n.device_id].location if n.device_id in devices else None,
                    joined_at=n.joined_ms / 1000 if n.joined_ms is not None else None,
                    left_at=n.left_ms / 1000 if n.left_ms is not None else None,
                    left_reason=n.left_reason,
                    paid=format_amount(n.paid_gross, cur),
                )
                for n in nodes
            ],
            ray_address=f"{c.node_ip}:{c.gcs_port}" if up else None,
            ray_client_address=f"ray://{c.node_ip}:{c.client_port}"
            if up and c.client_port
            else None,
            dashboard_url=f"http://{c.node_ip}:{c.dashboard_port}"
            if up and c.dashboard_port
            else None,
            ray_token=c.token if with_secrets else None,
        )
