"""A cluster's life as a pure state machine: events in, instructions out.

``ClusterMachine.handle(*events)`` changes the cluster's state (its status, its
nodes' states, roles and generations, the bill's running totals) and returns the
instructions the shell (``server/services/clusters.py``) must carry out beyond the
cluster's own rows: reserve or release devices, add a node, move money. Nothing
here reads a clock, a database or Ray; times come in with the events. The rules
of the bill are ``core/clusters.py``'s; this module decides when they apply.

Statuses (``ClusterStatus``)::

    deployment_requested ──first node starting──▶ deploying ──every node up──▶ running
           │                                          │  ▲                         │
           │                                          │  └──head lost, re-formed───┤
           └──────────── deploy deadline passed ──────┴──▶ failed ◀── every device lost
                                                                                   │
    any active status ── buyer terminates ──▶ terminated                           │
    running ─────────── rental expires ─────▶ completed ◀──────────────────────────┘

Node states (``NodeState``)::

    reserved ──▶ starting ──▶ up ──▶ stopped   (the cluster ended)
        └───────────┴──────────┴───▶ failed    (device silent, Ray failed, or late)

Losing a node: it is paid up to the device's last heartbeat (never before it
joined), its device is released, and a replacement is asked for (``Reserve``,
excluding every device that ever served the cluster). The shell answers with
``ReplacementFound`` or ``NoReplacement``; several losses in one tick are taken one
after the other. A found replacement joins as a worker, or as the head when there
is none. A lost head re-forms the cluster: a new generation under the first
survivor, every node restarting (``Reform``). With no replacement, the slot's
unused prepaid time is refunded at once (``RefundSlot``), or, with no survivor
either, the cluster fails.

The bill: nodes are paid from joining (when the cluster first ran, or when a
replacement came up) until they left or the rental expired (``PayNode`` slices
add up exactly to the whole); at the end the buyer's fee is taken on what was
charged and the rest of the escrow goes back (``TakeBuyerFee``, ``RefundRest``).
So, at every step: ``paid = charged + refunded + buyer_fee + escrow_left``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from idlegrid.core.clusters import (
    ACTIVE,
    ClusterStatus,
    close,
    gross,
    join_overdue,
    prepayment,
    settle_slice,
    slot_refund,
)
from idlegrid.errors import ClusterNotActive

SECONDS_PER_HOUR = 3600


class NodeState(StrEnum):
    RESERVED = "reserved"  # its device is taken; its agent has not started Ray yet
    STARTING = "starting"
    UP = "up"
    FAILED = "failed"  # left: its device was lost, Ray failed, or it joined too late
    STOPPED = "stopped"  # left: the cluster ended


class NodeRole(StrEnum):
    HEAD = "head"
    WORKER = "worker"


REPORTABLE = frozenset({NodeState.STARTING, NodeState.UP, NodeState.FAILED, NodeState.STOPPED})


def ms(t: float) -> int:
    return round(t * 1000)


# -- state -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    """One device's time in the cluster (a replacement is a new node)."""

    device_id: str
    payee: str
    role: NodeRole
    generation: int
    state: NodeState = NodeState.RESERVED
    assigned_at: float | None = None
    up_at: float | None = None
    joined_ms: int | None = None  # paid from here
    left_ms: int | None = None  # paid until here
    left_reason: str | None = None
    paid_gross: int = 0
    settled: bool = False  # nothing more to pay

    @property
    def open(self) -> bool:
        return self.left_ms is None


@dataclass(slots=True)
class HeadAddress:
    node_ip: str | None
    gcs_port: int
    dashboard_port: int | None = None
    client_port: int | None = None


@dataclass(slots=True)
class ClusterState:
    """Everything the machine decides on; the shell loads it from and stores it to rows."""

    id: str
    status: ClusterStatus
    currency: str
    price: int  # per device-hour, smallest units
    quantity: int
    hours: int
    paid: int = 0  # into escrow
    charged: int = 0  # out of escrow, to providers and their fees
    refunded: int = 0
    buyer_fee: int = 0
    generation: int = 0
    head_device: str | None = None
    head: HeadAddress | None = None
    deploy_deadline: float | None = None
    running_at: float | None = None
    expires_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None
    nodes: list[Node] = field(default_factory=list)  # in the order they were added

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def escrow_left(self) -> int:
        return self.paid - self.charged - self.refunded - self.buyer_fee

    def open_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.open]

    def node(self, device_id: str) -> Node | None:
        """The device's open node, else its last one."""
        found = None
        for n in self.nodes:
            if n.device_id == device_id:
                found = n
                if n.open:
                    return n
        return found


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeReported:
    """An agent's word on its Ray node (its head's address already checked by the shell)."""

    device_id: str
    generation: int
    state: NodeState
    at: float
    head: HeadAddress | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """The loop's look at the cluster: which of its devices are alive, and when each
    was last heard from (None: never, or not known)."""

    at: float
    alive: frozenset[str]
    last_seen: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Terminated:
    at: float


@dataclass(frozen=True, slots=True)
class Extended:
    hours: int


@dataclass(frozen=True, slots=True)
class ReplacementFound:
    """The answer to ``Reserve``: this device is taken for the cluster."""

    device_id: str
    payee: str
    at: float


@dataclass(frozen=True, slots=True)
class NoReplacement:
    """The answer to ``Reserve``: no device is free."""


@dataclass(frozen=True, slots=True)
class Settle:
    """Pay every node what it earned up to ``at_ms`` (the hourly settlement)."""

    at_ms: int


Event = NodeReported | Tick | Terminated | Extended | ReplacementFound | NoReplacement | Settle


# -- instructions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reserve:
    """Take one matching device for the cluster, none of ``exclude``; answer with
    ``ReplacementFound`` or ``NoReplacement``."""

    exclude: frozenset[str]


@dataclass(frozen=True, slots=True)
class Release:
    device_id: str


@dataclass(frozen=True, slots=True)
class AddNode:
    device_id: str
    payee: str
    role: NodeRole
    generation: int


@dataclass(frozen=True, slots=True)
class Reform:
    """A new generation under ``head_device``: every open node restarts Ray."""

    generation: int
    head_device: str | None


@dataclass(frozen=True, slots=True)
class SetStatus:
    status: ClusterStatus
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TakePayment:
    """Move ``amount`` from the buyer's balance into the cluster's escrow."""

    amount: int


@dataclass(frozen=True, slots=True)
class PayNode:
    """Pay a node's slice up to ``until_ms``: ``provider`` to its payee, ``fee`` to fees."""

    device_id: str
    payee: str
    until_ms: int
    gross: int
    provider: int
    fee: int


@dataclass(frozen=True, slots=True)
class RefundSlot:
    device_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class TakeBuyerFee:
    amount: int


@dataclass(frozen=True, slots=True)
class RefundRest:
    amount: int


Instruction = (
    Reserve | Release | AddNode | Reform | SetStatus | TakePayment | PayNode | RefundSlot
    | TakeBuyerFee | RefundRest
)  # fmt: skip


# -- the machine -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Loss:
    device_id: str
    at: float
    reason: str


class ClusterMachine:
    def __init__(self, state: ClusterState, deploy_timeout_s: float) -> None:
        self.state = state
        self.deploy_timeout_s = deploy_timeout_s
        self._losses: deque[_Loss] = deque()
        self._awaiting: _Loss | None = None  # a loss whose replacement was asked for

    @property
    def awaiting_replacement(self) -> bool:
        return self._awaiting is not None

    def handle(self, *events: Event) -> list[Instruction]:
        out: list[Instruction] = []
        for event in events:
            self._handle(event, out)
        return out

    def _handle(self, event: Event, out: list[Instruction]) -> None:
        s = self.state
        match event:
            case ReplacementFound() | NoReplacement():
                self._replaced(event, out)
                self._next_loss(out)
            case Settle(at_ms=at_ms):
                self._settle(at_ms, out)
            case Extended(hours=hours):
                self._require_active()
                pay = prepayment(s.price, s.quantity, hours, s.currency)
                out.append(TakePayment(pay.total))
                s.paid += pay.total
                s.hours += hours
                if s.expires_at is not None:
                    s.expires_at += hours * SECONDS_PER_HOUR
            case Terminated(at=at):
                self._require_active()
                self._close(ClusterStatus.TERMINATED, at, "terminated by owner", out)
            case NodeReported():
                self._reported(event, out)
                self._next_loss(out)
            case Tick():
                self._tick(event, out)
                self._next_loss(out)

    def _require_active(self) -> None:
        if not self.state.active:
            raise ClusterNotActive(cluster_id=self.state.id, status=self.state.status.value)

    # -- forming -------------------------------------------------------------------------

    def _reported(self, rep: NodeReported, out: list[Instruction]) -> None:
        s = self.state
        node = s.node(rep.device_id)
        if node is None or not node.open or not s.active or node.generation != rep.generation:
            return  # left, or stale: the agent catches up from its assignment
        node.state = rep.state
        if (
            node.role is NodeRole.HEAD
            and rep.head is not None
            and rep.state
            in (
                NodeState.STARTING,
                NodeState.UP,
            )
        ):
            # Known as soon as the head starts: workers start in parallel and wait
            # for its control store (about half the time to running).
            s.head = rep.head
        if rep.state is NodeState.UP:
            node.up_at = rep.at
            self._maybe_running(rep.at, out)
        elif rep.state is NodeState.STARTING:
            if s.status is ClusterStatus.DEPLOYMENT_REQUESTED:
                self._set_status(ClusterStatus.DEPLOYING, None, out)
        else:
            self._losses.append(_Loss(rep.device_id, rep.at, f"ray {rep.state.value}"))

    def _maybe_running(self, now: float, out: list[Instruction]) -> None:
        s = self.state
        nodes = s.open_nodes()
        if not nodes or any(n.state is not NodeState.UP for n in nodes):
            if s.status is ClusterStatus.DEPLOYMENT_REQUESTED:
                self._set_status(ClusterStatus.DEPLOYING, None, out)
            return
        if s.running_at is None:
            s.running_at = now
            s.expires_at = now + s.hours * SECONDS_PER_HOUR
        if s.status is not ClusterStatus.RUNNING:
            self._set_status(ClusterStatus.RUNNING, None, out)
        for n in nodes:
            if n.joined_ms is None:
                n.joined_ms = ms(now)

    # -- the loop's look -----------------------------------------------------------------

    def _tick(self, tick: Tick, out: list[Instruction]) -> None:
        s = self.state
        if not s.active:
            return
        if s.expires_at is not None and tick.at >= s.expires_at:
            self._close(ClusterStatus.COMPLETED, s.expires_at, "expired", out)
            return
        if s.running_at is None and s.deploy_deadline is not None and tick.at > s.deploy_deadline:
            self._close(ClusterStatus.FAILED, tick.at, "deploy timed out", out)
            return
        for node in s.open_nodes():
            if node.device_id not in tick.alive:
                last = tick.last_seen.get(node.device_id) or tick.at
                self._losses.append(_Loss(node.device_id, min(tick.at, last), "device down"))
            elif join_overdue(
                s.running_at is not None,
                node.state is NodeState.UP,
                node.assigned_at,
                tick.at,
                self.deploy_timeout_s,
            ):
                self._losses.append(_Loss(node.device_id, tick.at, "did not join in time"))

    # -- healing -------------------------------------------------------------------------

    def _next_loss(self, out: list[Instruction]) -> None:
        """Start on the next lost node, unless one is waiting for its replacement."""
        s = self.state
        while self._awaiting is None and self._losses:
            loss = self._losses.popleft()
            node = s.node(loss.device_id)
            if node is None or not node.open or not s.active:
                continue  # lost already, or the cluster ended meanwhile
            at_ms = ms(loss.at)
            if node.joined_ms is not None:
                at_ms = max(at_ms, node.joined_ms)
            node.left_ms = at_ms
            node.left_reason = loss.reason
            node.state = NodeState.FAILED
            out.append(Release(node.device_id))
            self._awaiting = loss
            out.append(Reserve(frozenset(n.device_id for n in s.nodes)))

    def _replaced(self, answer: ReplacementFound | NoReplacement, out: list[Instruction]) -> None:
        s = self.state
        loss, self._awaiting = self._awaiting, None
        if loss is None:
            raise ValueError("a replacement answered no Reserve")
        lost = s.node(loss.device_id)
        assert lost is not None and lost.left_ms is not None
        was_head = lost.role is NodeRole.HEAD
        survivors = s.open_nodes()
        if was_head:
            self._reform(survivors, loss.at, out)
        if isinstance(answer, ReplacementFound):
            role = NodeRole.WORKER if s.head_device else NodeRole.HEAD
            node = Node(answer.device_id, answer.payee, role, s.generation, assigned_at=answer.at)
            s.nodes.append(node)
            out.append(AddNode(node.device_id, node.payee, role, s.generation))
            s.head_device = s.head_device or answer.device_id
            if s.running_at is None or was_head:
                self._set_status(ClusterStatus.DEPLOYING, None, out)
            return
        if not survivors:
            self._close(ClusterStatus.FAILED, loss.at, "every device was lost", out)
            return
        self._refund_slot(lost, out)
        s.quantity = len(survivors)
        if was_head:
            self._set_status(ClusterStatus.DEPLOYING, None, out)

    def _reform(self, survivors: list[Node], now: float, out: list[Instruction]) -> None:
        """Ray's control store lived on the head: a new generation under the first
        survivor, and every agent restarts its node."""
        s = self.state
        s.generation += 1
        s.head = None
        for i, n in enumerate(survivors):
            n.generation = s.generation
            n.role = NodeRole.HEAD if i == 0 else NodeRole.WORKER
            n.state = NodeState.RESERVED
            n.assigned_at = now
        s.head_device = survivors[0].device_id if survivors else None
        out.append(Reform(s.generation, s.head_device))

    def _refund_slot(self, node: Node, out: list[Instruction]) -> None:
        """No replacement: the slot's unused prepaid time goes back now."""
        s = self.state
        if s.expires_at is None or node.left_ms is None:
            return  # not running yet: nothing was charged, the end refunds it all
        refund = min(slot_refund(s.price, node.left_ms, ms(s.expires_at)), s.escrow_left)
        if refund > 0:
            s.refunded += refund
            out.append(RefundSlot(node.device_id, refund))

    # -- money ---------------------------------------------------------------------------

    def _settle(self, now_ms: int, out: list[Instruction]) -> None:
        s = self.state
        expires_ms = ms(s.expires_at) if s.expires_at is not None else now_ms
        for node in s.nodes:
            if node.settled:
                continue
            if node.joined_ms is None:
                if node.left_ms is not None:
                    node.settled = True  # never joined: nothing earned
                continue
            ends = node.left_ms if node.left_ms is not None else now_ms
            until = min(now_ms, expires_ms, ends)
            cut = settle_slice(s.price, node.joined_ms, until, node.paid_gross, s.currency)
            if cut.gross > 0:
                out.append(
                    PayNode(node.device_id, node.payee, until, cut.gross, cut.provider, cut.fee)
                )
                node.paid_gross += cut.gross
                s.charged += cut.gross
            if node.left_ms is not None and until >= min(node.left_ms, expires_ms):
                node.settled = True

    def _close(self, status: ClusterStatus, at: float, reason: str, out: list[Instruction]) -> None:
        """End the cluster at ``at``: close nodes, settle, take the buyer's fee, refund."""
        s = self.state
        at_ms = ms(at)
        if s.expires_at is not None:
            at_ms = min(at_ms, ms(s.expires_at))
        for node in s.open_nodes():
            node.left_ms = at_ms
            node.left_reason = reason
            node.state = NodeState.STOPPED
            out.append(Release(node.device_id))
        self._settle(at_ms, out)
        closing = close(s.escrow_left, s.charged, s.currency)
        if closing.buyer_fee:
            s.buyer_fee += closing.buyer_fee
            out.append(TakeBuyerFee(closing.buyer_fee))
        if closing.refund:
            s.refunded += closing.refund
            out.append(RefundRest(closing.refund))
        s.ended_at = at
        self._losses.clear()
        self._set_status(status, reason, out)

    def _set_status(
        self, status: ClusterStatus, reason: str | None, out: list[Instruction]
    ) -> None:
        s = self.state
        s.status = status
        if reason is not None:
            s.reason = reason
        out.append(SetStatus(status, reason))


# -- invariants ------------------------------------------------------------------------------


def problems(state: ClusterState) -> list[str]:
    """What is wrong with a cluster's state (empty when nothing is): what tests check
    after every step."""
    s = state
    out = []
    open_devices = [n.device_id for n in s.open_nodes()]
    if len(open_devices) != len(set(open_devices)):
        out.append(f"a device holds two open nodes: {sorted(open_devices)}")
    if not s.active and open_devices:
        out.append(f"a {s.status.value} cluster has open nodes: {sorted(open_devices)}")
    if s.escrow_left < 0:
        out.append(f"escrow overdrawn: {s.escrow_left}")
    if not s.active and s.escrow_left != 0:
        out.append(f"a {s.status.value} cluster left {s.escrow_left} in escrow")
    paid_out = sum(n.paid_gross for n in s.nodes)
    if paid_out != s.charged:
        out.append(f"nodes were paid {paid_out}, the cluster charged {s.charged}")
    expires_ms = ms(s.expires_at) if s.expires_at is not None else None
    for n in s.nodes:
        if n.paid_gross and n.joined_ms is None:
            out.append(f"node {n.device_id} paid without joining")
        if n.joined_ms is not None:
            ends = [t for t in (n.left_ms, expires_ms) if t is not None]
            if ends and n.paid_gross > gross(s.price, n.joined_ms, min(ends)):
                out.append(f"node {n.device_id} paid past the time it served")
    heads = [n for n in s.open_nodes() if n.role is NodeRole.HEAD]
    if len(heads) > 1:
        out.append(f"two heads: {[n.device_id for n in heads]}")
    return out
