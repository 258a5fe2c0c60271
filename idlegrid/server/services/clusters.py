"""IO Cloud: quotes, deploys, cluster forming, healing, expiry and the bill.

Each public method is one database transaction; the rules live in the pure
core (``core/matching.py`` picks devices, ``core/pricing.py`` prices them,
``core/clusters.py`` does the bill), and ``services/market.py`` finds the
candidates and prices a request.

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
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.catalog import Catalog
from idlegrid.core import clusters as bill
from idlegrid.core import pricing
from idlegrid.core.addresses import head_address_problem
from idlegrid.core.clusters import ACTIVE, ClusterStatus, DurationUnit
from idlegrid.core.fees import format_amount
from idlegrid.core.ledger import Transfer
from idlegrid.errors import (
    BadNodeAddress,
    ClusterNotActive,
    InvalidApiKey,
    NoMatchingDevices,
    NotYourDevice,
    QuoteExpired,
    QuoteUsed,
    UnknownApiKey,
    UnknownCluster,
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
    QuoteView,
    RayNodeReport,
    Readiness,
)
from idlegrid.server.db.models import (
    ApiKey,
    Cluster,
    ClusterNode,
    Device,
    Quote,
)
from idlegrid.server.liveness import LivenessTable
from idlegrid.server.services.ledger import LedgerService, fees_account, user_account
from idlegrid.server.services.market import Marketplace
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
        self._last_settle = clock()
        self._tick_lock = threading.Lock()
        self._postgres = sessions.kw["bind"].dialect.name == "postgresql"
        self.market = Marketplace(sessions, liveness, catalog, ledger.oracle, clock)

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
        """The buyer an API key acts for. Read from the database on every request (one
        unique-index lookup), so a revocation holds at once, on every replica."""
        with self.sessions() as db:
            owner = db.scalar(
                select(ApiKey.owner).where(
                    ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
                )
            )
        if owner is None:
            raise InvalidApiKey()
        return owner

    def api_keys(self, owner: str) -> list[ApiKeyView]:
        """The owner's keys, newest first, revoked ones included (never the keys)."""
        with self.sessions() as db:
            rows = db.scalars(
                select(ApiKey).where(ApiKey.owner == owner).order_by(ApiKey.created_at.desc())
            )
            return [_key_view(k) for k in rows]

    def revoke_api_key(self, owner: str, key_id: str) -> ApiKeyView:
        """Revoke one of the owner's keys; revoking a revoked key changes nothing."""
        with self.sessions.begin() as db:
            row = db.get(ApiKey, key_id, with_for_update=True)
            if row is None or row.owner != owner:
                raise UnknownApiKey(key_id=key_id)
            if row.revoked_at is None:
                row.revoked_at = self.clock()
                log.info("API key %s of %s revoked", key_id, owner)
            return _key_view(row)

    # -- quotes and deploys -----------------------------------------------------------

    def quote(self, owner: str, req: DeployRequest) -> QuoteView:
        """Match now and price the request (``core/pricing.py``): dynamic, or an
        auction when the buyer names a maximum. Nothing is reserved yet.

        The matching and pricing read outside any write transaction (on SQLite a
        write transaction holds the database's one write lock); only the quote's row
        is written, in a transaction of its own."""
        hours = bill.duration_hours(req.duration, DurationUnit(req.duration_unit))
        now = self.clock()
        with self.sessions() as db:
            candidates, floors = self.market.candidates(db, renter=owner)
            reqs = self.market.requirements(db, owner, req, (), req.quantity)
            found = self.market.found(candidates, reqs)
            devices = len(found.devices) if req.product == "mega-ray" else req.quantity
            if req.max_price_usd is not None:
                breakdown = self.market.auction(req, reqs, candidates, floors, devices, hours)
            else:
                breakdown = pricing.price(
                    pricing.PriceRequest(
                        base_usd=self.market.base_usd(req, found.devices),
                        devices=devices,
                        hours=hours,
                        market=self.market.market_of(db, reqs, candidates),
                        urgency=pricing.Urgency(req.start),
                        min_tier=req.min_tier,
                        location_constrained=bool(req.locations),
                        secure=req.secure,
                    ),
                    req.currency,
                    self.ledger.oracle.io_usd(),
                )
                cap = self.market.micro_usd(breakdown.per_device_hour, req.currency)
                found = self.market.found(
                    [c for c in candidates if floors[c.device_id] <= cap], reqs
                )
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
        view = self._quote_view(quote, breakdown, found.explain.as_dict())
        with self.sessions.begin() as db:
            db.add(quote)
        return view

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
            cap = self.market.micro_usd(quote.price, quote.currency)
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

    def report_node(
        self, device_id: str, rep: RayNodeReport, source: str | None = None
    ) -> Assignment | None:
        """An agent's word on its Ray node, sent from ``source``; returns its current
        assignment. A head's address must fit where it reports from."""
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
            if node.role == "head" and rep.node_ip is not None:
                problem = head_address_problem(rep.node_ip, source)
                if problem is not None:
                    raise BadNodeAddress(
                        f"the head may not name {rep.node_ip}: {problem}",
                        node_ip=rep.node_ip,
                        source=source,
                        reason=problem,
                    )
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
                found = self.market.match(db, owner, req, skip, need, cap_micro_usd)
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
            assigned_at=self.clock(),
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
                    elif bill.join_overdue(
                        cluster.running_at is not None,
                        node.state == "up",
                        node.assigned_at,
                        now,
                        self.settings.deploy_timeout_s,
                    ):
                        self._lose_node(db, cluster, node, now, "did not join in time")
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
        cap = self.market.micro_usd(cluster.price, cluster.currency)
        replacement = self._reserve(db, cluster.owner, req, cluster.id, 1, served, cap)
        if was_head:
            self._reform(cluster, survivors, self.clock())
        for dev in replacement:
            db.add(self._node(cluster, dev, "worker" if cluster.head_device else "head"))
            cluster.head_device = cluster.head_device or dev.id
        if replacement:
            if cluster.running_at is None or was_head:
                cluster.status = ClusterStatus.DEPLOYING.value
            return
        if not survivors:
            db.flush()
            self._close(db, cluster, ClusterStatus.FAILED, at, "every device was lost")
            return
        self._refund_slot(db, cluster, node, at_ms)
        cluster.quantity = len(survivors)
        if was_head:
            cluster.status = ClusterStatus.DEPLOYING.value

    @staticmethod
    def _reform(cluster: Cluster, survivors: list[ClusterNode], now: float) -> None:
        """Ray's GCS lived on the head: a new generation under the first survivor,
        and every agent restarts its node."""
        cluster.generation += 1
        cluster.node_ip = cluster.gcs_port = None
        cluster.dashboard_port = cluster.client_port = None
        for i, n in enumerate(survivors):
            n.generation = cluster.generation
            n.role = "head" if i == 0 else "worker"
            n.state = "reserved"
            n.assigned_at = now
        cluster.head_device = survivors[0].device_id if survivors else None

    def _refund_slot(self, db: Session, cluster: Cluster, node: ClusterNode, at_ms: int) -> None:
        """No replacement: the slot's unused prepaid time goes back now."""
        if cluster.expires_at is None:
            return  # not running yet: nothing was charged, the end refunds it all
        escrow = cluster_escrow(cluster.id, cluster.currency)
        refund = min(
            bill.slot_refund(cluster.price, at_ms, _ms(cluster.expires_at)),
            self.ledger.book.account(db, escrow).available,
        )
        if refund <= 0:
            return
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
            usd_per_device_hour=f"{Decimal(self.market.micro_usd(q.price, cur)) / 10**6:.4f}",
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


def _key_view(k: ApiKey) -> ApiKeyView:
    return ApiKeyView(
        id=k.id, name=k.name, owner=k.owner, created_at=k.created_at, revoked_at=k.revoked_at
    )
