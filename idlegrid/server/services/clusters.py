"""IO Cloud: deploys, and the shell around each cluster's state machine.

Each public method is one database transaction: load the cluster's rows, feed
the machine (``core/cluster_machine.py``, where forming, healing, expiry and the
bill are decided) its event, carry out its instructions through the book and the
ORM, store its state back. ``core/matching.py`` picks devices
(``services/market.py`` finds the candidates), ``services/quotes.py`` prices a
request, ``services/api_keys.py`` keeps buyers' keys, and
``services/cluster_views.py`` shows clusters.

A deploy reserves its devices (``Marketplace.reserve``) and pays into escrow in
one transaction, so one that cannot pay reserves nothing, and one that finds too
few devices charges nothing.

Forming: a reserved device learns its assignment (cluster, generation, role,
Ray token, head address) from its next heartbeat reply. The head agent starts
``ray start --head`` and reports its ports at once; workers then get the
head's address and start alongside it (``ray start --address`` waits for the
head's control store). The cluster is ``running`` when every node reported up.

Healing (the machine's rules): a node whose device stops heartbeating is closed
at the device's last heartbeat, its device released, and a replacement reserved
here with the same requirements when one exists; a lost head re-forms the
cluster; with no replacement the slot's unused prepaid time goes back at once.

Heartbeat replies read assignments from the mailbox (``server/mailbox.py``),
rewritten for a cluster after each change; one control-plane process owns it
(see docs/architecture.md on replicas).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.core.addresses import head_address_problem
from idlegrid.core.cluster_machine import (
    AddNode,
    ClusterMachine,
    Event,
    Extended,
    HeadAddress,
    Instruction,
    NodeReported,
    NodeRole,
    NodeState,
    NoReplacement,
    PayNode,
    RefundRest,
    RefundSlot,
    Release,
    ReplacementFound,
    Reserve,
    SetStatus,
    Settle,
    TakeBuyerFee,
    TakePayment,
    Terminated,
    Tick,
    ms,
)
from idlegrid.core.clusters import ACTIVE, ClusterStatus, DurationUnit, duration_hours, prepayment
from idlegrid.errors import (
    BadNodeAddress,
    NoMatchingDevices,
    NotYourDevice,
    QuoteExpired,
    QuoteUsed,
    UnknownCluster,
    UnknownQuote,
)
from idlegrid.protocol import (
    Assignment,
    ClusterView,
    DeployRequest,
    DeviceStatus,
    RayNodeReport,
)
from idlegrid.server.db.models import Cluster, ClusterNode, Quote
from idlegrid.server.liveness import LivenessTable
from idlegrid.server.mailbox import Mailbox
from idlegrid.server.services import cluster_money
from idlegrid.server.services.cluster_rows import (
    assignments_of,
    new_cluster,
    node_row,
    node_rows,
    state_of,
    store,
)
from idlegrid.server.services.cluster_views import cluster_view
from idlegrid.server.services.ledger import LedgerService
from idlegrid.server.services.market import Marketplace
from idlegrid.server.services.overlay import OverlayService
from idlegrid.server.settings import ServerSettings

log = logging.getLogger("idlegrid.server.clusters")

ACTIVE_VALUES = [s.value for s in ACTIVE]


class ClusterService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        ledger: LedgerService,
        liveness: LivenessTable,
        mailbox: Mailbox,
        market: Marketplace,
        settings: ServerSettings,
        clock: Callable[[], float],
        overlay: OverlayService | None = None,
    ) -> None:
        self.sessions = sessions
        self.overlay = overlay
        self.ledger = ledger
        self.liveness = liveness
        self.market = market
        self.settings = settings
        self.clock = clock
        self.mailbox = mailbox  # each device's assignment, for its heartbeat replies
        self._last_settle = clock()
        self._tick_lock = threading.Lock()

    # -- the buyer ----------------------------------------------------------------------

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
            chosen = self.market.reserve(db, owner, req, cluster_id, quote.devices, set(), cap)
            if len(chosen) < quote.devices:
                raise NoMatchingDevices(
                    "not enough devices are free now",
                    wanted=quote.devices,
                    found=len(chosen),
                )
            pay = prepayment(quote.price, quote.devices, quote.hours, quote.currency)
            overlay = self.overlay is not None and self.overlay.enabled
            cluster = new_cluster(cluster_id, owner, req, quote, pay.total, now, overlay)
            cluster.deploy_deadline = now + self.settings.deploy_timeout_s
            cluster.head_device = chosen[0].id
            db.add(cluster)
            db.flush()
            self._carry_out(db, cluster, {}, TakePayment(pay.total), now)
            for i, dev in enumerate(chosen):
                role = NodeRole.HEAD if i == 0 else NodeRole.WORKER
                db.add(node_row(cluster.id, dev.id, dev.owner, role, 0, now))
            quote.cluster_id = cluster_id
            db.flush()
            view = cluster_view(db, cluster, now, with_secrets=True)
        self.refresh_assignments(cluster_id)
        log.info("cluster %s: %d devices reserved, %s paid", cluster_id, len(chosen), view.paid)
        return view

    def extend(self, owner: str, cluster_id: str, amount: int, unit: DurationUnit) -> ClusterView:
        hours = duration_hours(amount, unit)
        return self._buyer_event(owner, cluster_id, Extended(hours))

    def terminate(self, owner: str, cluster_id: str) -> ClusterView:
        """End the cluster now: providers are paid to now, the rest is refunded."""
        return self._buyer_event(owner, cluster_id, Terminated(self.clock()))

    def _buyer_event(self, owner: str, cluster_id: str, event: Event) -> ClusterView:
        with self.sessions.begin() as db:
            cluster = db.get(Cluster, cluster_id, with_for_update=True)
            if cluster is None or cluster.owner != owner:
                raise UnknownCluster(cluster_id=cluster_id)
            self._run(db, cluster, event)
            view = cluster_view(db, cluster, self.clock(), with_secrets=cluster.token is not None)
        self.refresh_assignments(cluster_id)
        return view

    # -- reads --------------------------------------------------------------------------

    def get(self, owner: str, cluster_id: str) -> ClusterView:
        with self.sessions() as db:
            cluster = db.get(Cluster, cluster_id)
            if cluster is None or cluster.owner != owner:
                raise UnknownCluster(cluster_id=cluster_id)
            return cluster_view(db, cluster, self.clock(), with_secrets=True)

    def list_clusters(self, owner: str, active_only: bool = False) -> list[ClusterView]:
        with self.sessions() as db:
            q = select(Cluster).where(Cluster.owner == owner).order_by(Cluster.created_at.desc())
            if active_only:
                q = q.where(Cluster.status.in_(ACTIVE_VALUES))
            now = self.clock()
            return [cluster_view(db, c, now, with_secrets=True) for c in db.scalars(q)]

    def list_public(self, limit: int) -> list[ClusterView]:
        """The newest clusters of every buyer, without their token (the explorer)."""
        with self.sessions() as db:
            q = select(Cluster).order_by(Cluster.created_at.desc()).limit(limit)
            now = self.clock()
            return [cluster_view(db, c, now, with_secrets=False) for c in db.scalars(q)]

    # -- agents -------------------------------------------------------------------------

    def report_node(
        self, device_id: str, rep: RayNodeReport, source: str | None = None
    ) -> Assignment | None:
        """An agent's word on its Ray node, sent from ``source``; returns its current
        assignment. A head's address must fit where it reports from."""
        now = self.clock()
        with self.sessions.begin() as db:
            cluster = db.get(Cluster, rep.cluster_id, with_for_update=True)
            rows = node_rows(db, rep.cluster_id) if cluster is not None else {}
            node = rows.get(device_id)
            if cluster is None or node is None:
                raise NotYourDevice("this device never served that cluster", device_id=device_id)
            current = node.left_ms is None and node.generation == rep.generation
            problem = None
            if current and cluster.overlay and self.overlay is not None:
                problem = self.overlay.take_report(cluster, rows, device_id, rep)
            elif current and node.role == NodeRole.HEAD.value and rep.node_ip is not None:
                problem = head_address_problem(rep.node_ip, source)
            if problem is not None:
                raise BadNodeAddress(
                    f"the head may not name {rep.node_ip}: {problem}",
                    node_ip=rep.node_ip,
                    source=source,
                    reason=problem,
                )
            state = NodeState(rep.state)
            if state in (NodeState.FAILED, NodeState.STOPPED) and current:
                log.warning(
                    "cluster %s: node %s %s: %s", cluster.id, device_id, rep.state, rep.error
                )
            head = (
                HeadAddress(rep.node_ip, rep.gcs_port, rep.dashboard_port, rep.client_port)
                if rep.gcs_port
                else None
            )
            event = NodeReported(device_id, rep.generation, state, now, head)
            self._run(db, cluster, event, rows)
        self.refresh_assignments(rep.cluster_id)
        return self.mailbox.assignment(device_id)

    # -- the loop ------------------------------------------------------------------------

    def tick(self) -> None:
        """Watch deploys, heal, expire and settle; one transaction per cluster."""
        with self._tick_lock:
            now = self.clock()
            with self.sessions() as db:
                active = list(
                    db.scalars(select(Cluster.id).where(Cluster.status.in_(ACTIVE_VALUES)))
                )
            for cluster_id in active:
                try:
                    self._tick_cluster(cluster_id, now)
                except Exception:
                    log.exception("cluster %s: tick failed", cluster_id)
            if now - self._last_settle >= self.settings.settle_interval_s:
                self.settle(now)
                self._last_settle = now

    def _tick_cluster(self, cluster_id: str, now: float) -> None:
        with self.sessions.begin() as db:
            cluster = db.get(Cluster, cluster_id, with_for_update=True)
            if cluster is None or ClusterStatus(cluster.status) not in ACTIVE:
                return
            rows = node_rows(db, cluster_id)
            alive, last_seen = set(), {}
            for row in rows.values():
                if row.left_ms is not None:
                    continue
                dev = self.liveness.get(row.device_id)
                up = dev is not None and dev.status is DeviceStatus.UP
                if up and self.liveness.is_live(row.device_id, now):
                    alive.add(row.device_id)
                last_seen[row.device_id] = dev.last_seen if dev is not None else None
            changed = self._run(db, cluster, Tick(now, frozenset(alive), last_seen), rows)
        if changed:
            self.refresh_assignments(cluster_id)

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
                before = cluster.charged
                self._run(db, cluster, Settle(ms(now)))
                paid += cluster.charged - before
        return paid

    def load(self) -> None:
        """Rebuild the in-memory assignments from the database (at start-up)."""
        with self.sessions() as db:
            ids = list(db.scalars(select(Cluster.id).where(Cluster.status.in_(ACTIVE_VALUES))))
        for cluster_id in ids:
            self.refresh_assignments(cluster_id)

    # -- the shell: rows ⇄ machine, instructions → book and ORM --------------------------

    def _run(
        self,
        db: Session,
        cluster: Cluster,
        event: Event,
        rows: dict[str, ClusterNode] | None = None,
    ) -> bool:
        """Feed ``event`` to the cluster's machine, carry out its instructions (each
        ``Reserve`` answered at once), and store its state; True if it did anything."""
        rows = node_rows(db, cluster.id) if rows is None else rows
        machine = ClusterMachine(state_of(cluster, rows), self.settings.deploy_timeout_s)
        now = self.clock()
        todo: deque[Instruction] = deque(machine.handle(event))
        did = bool(todo)
        while todo:
            answer = self._carry_out(db, cluster, rows, todo.popleft(), now)
            if answer is not None:
                todo.extendleft(reversed(machine.handle(answer)))
        store(cluster, rows, machine.state)
        return did

    def _carry_out(
        self,
        db: Session,
        cluster: Cluster,
        rows: dict[str, ClusterNode],
        ins: Instruction,
        now: float,
    ) -> Event | None:
        match ins:
            case Reserve(exclude=exclude):
                req = DeployRequest.model_validate(cluster.request)
                cap = self.market.micro_usd(cluster.price, cluster.currency)
                found = self.market.reserve(
                    db, cluster.owner, req, cluster.id, 1, set(exclude), cap
                )
                return (
                    ReplacementFound(found[0].id, found[0].owner, now) if found else NoReplacement()
                )
            case Release(device_id=device_id):
                self.market.release(db, device_id, cluster.id)
                log.info("cluster %s: released %s", cluster.id, device_id)
            case AddNode(device_id=device_id, payee=payee, role=role, generation=generation):
                row = node_row(cluster.id, device_id, payee, role, generation, now)
                db.add(row)
                db.flush()  # its id names its payments
                rows[device_id] = row
            case TakePayment() | PayNode() | RefundSlot() | TakeBuyerFee() | RefundRest():
                accounts, posting = cluster_money.transfers(cluster, rows, ins)
                for account in accounts:
                    self.ledger.book.open_account(db, account, cluster.currency)
                self.ledger.book.post_batch(db, posting)
            case SetStatus(status=status, reason=reason):
                if status not in ACTIVE:
                    log.info("cluster %s %s (%s)", cluster.id, status.value, reason)
                    if self.overlay is not None:
                        # Its members' sightings go with it (were the transaction to
                        # roll back, the next hellos, 2 s apart, bring them back).
                        self.overlay.rendezvous.forget(cluster.id)
            case _:
                pass  # Reform: the state says it all (roles, generations)
        return None

    def refresh_assignments(self, cluster_id: str) -> None:
        with self.sessions() as db:
            cluster = db.get(Cluster, cluster_id)
            if cluster is None:
                return
            rows = node_rows(db, cluster_id)
            pairs = assignments_of(cluster, rows)
            if self.overlay is not None:
                pairs = self.overlay.attach(db, cluster, rows, pairs)
            for device_id, assignment in pairs:
                if assignment is not None:
                    self.mailbox.set_assignment(device_id, assignment)
                else:
                    self.mailbox.drop_assignment(device_id, cluster_id)
