"""A cluster's rows and its machine's state, each into the other.

``ClusterService`` loads a cluster's ``clusters`` row and every ``cluster_nodes``
row it ever had into a ``ClusterState`` (``state_of``), lets the machine decide,
and writes the state back (``store``); ``assignments_of`` is what the cluster's
devices are told in heartbeat replies. A device serves a cluster at most once (a
replacement excludes every device that served), so its node is keyed by device.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from idlegrid.core.cluster_machine import ClusterState, HeadAddress, Node, NodeRole, NodeState
from idlegrid.core.clusters import ACTIVE, ClusterStatus
from idlegrid.protocol import Assignment, DeployRequest
from idlegrid.server.db.models import Cluster, ClusterNode, Quote


def node_rows(db: Session, cluster_id: str) -> dict[str, ClusterNode]:
    """Every node the cluster ever had, by device (a device serves a cluster once)."""
    rows = db.scalars(
        select(ClusterNode).where(ClusterNode.cluster_id == cluster_id).order_by(ClusterNode.id)
    )
    return {r.device_id: r for r in rows}


def node_row(
    cluster_id: str, device_id: str, payee: str, role: NodeRole, generation: int, now: float
) -> ClusterNode:
    return ClusterNode(
        cluster_id=cluster_id,
        device_id=device_id,
        payee=payee,
        role=role.value,
        generation=generation,
        state=NodeState.RESERVED.value,
        assigned_at=now,
        paid_gross=0,
        settled=False,
    )


def state_of(c: Cluster, rows: dict[str, ClusterNode]) -> ClusterState:
    head = (
        HeadAddress(c.node_ip, c.gcs_port, c.dashboard_port, c.client_port)
        if c.gcs_port is not None
        else None
    )
    return ClusterState(
        id=c.id,
        status=ClusterStatus(c.status),
        currency=c.currency,
        price=int(c.price),
        quantity=c.quantity,
        hours=c.hours,
        paid=int(c.paid),
        charged=int(c.charged),
        refunded=int(c.refunded),
        generation=c.generation,
        head_device=c.head_device,
        head=head,
        deploy_deadline=c.deploy_deadline,
        running_at=c.running_at,
        expires_at=c.expires_at,
        ended_at=c.ended_at,
        reason=c.reason,
        nodes=[
            Node(
                device_id=r.device_id,
                payee=r.payee,
                role=NodeRole(r.role),
                generation=r.generation,
                state=NodeState(r.state),
                assigned_at=r.assigned_at,
                up_at=r.up_at,
                joined_ms=r.joined_ms,
                left_ms=r.left_ms,
                left_reason=r.left_reason,
                paid_gross=int(r.paid_gross),
                settled=r.settled,
            )
            for r in rows.values()
        ],
    )


def store(c: Cluster, rows: dict[str, ClusterNode], s: ClusterState) -> None:
    c.status = s.status.value
    c.reason = s.reason
    c.quantity, c.hours = s.quantity, s.hours
    c.paid, c.charged, c.refunded = s.paid, s.charged, s.refunded
    c.generation, c.head_device = s.generation, s.head_device
    head = s.head
    c.node_ip = head.node_ip if head else None
    c.gcs_port = head.gcs_port if head else None
    c.dashboard_port = head.dashboard_port if head else None
    c.client_port = head.client_port if head else None
    c.running_at, c.expires_at, c.ended_at = s.running_at, s.expires_at, s.ended_at
    if not s.active:
        c.token = None  # the cluster is gone; its token dies with it
    for n in s.nodes:
        row = rows[n.device_id]
        row.role, row.generation, row.state = n.role.value, n.generation, n.state.value
        row.assigned_at, row.up_at = n.assigned_at, n.up_at
        row.joined_ms, row.left_ms, row.left_reason = n.joined_ms, n.left_ms, n.left_reason
        row.paid_gross, row.settled = n.paid_gross, n.settled


def assignments_of(c: Cluster, rows: dict[str, ClusterNode]) -> list[tuple[str, Assignment | None]]:
    """What each of the cluster's devices is told in its heartbeat replies: its
    assignment while its node is open in an active cluster, else None."""
    active = ClusterStatus(c.status) in ACTIVE and c.token is not None
    head = f"{c.node_ip}:{c.gcs_port}" if c.node_ip and c.gcs_port else None
    out: list[tuple[str, Assignment | None]] = []
    for row in rows.values():
        assignment = None
        if row.left_ms is None and active and c.token:
            assignment = Assignment(
                cluster_id=c.id,
                generation=row.generation,
                role="head" if row.role == NodeRole.HEAD.value else "worker",
                token=c.token,
                head_address=head,
            )
        out.append((row.device_id, assignment))
    return out


def new_cluster(
    cluster_id: str,
    owner: str,
    req: DeployRequest,
    quote: Quote,
    paid: int,
    now: float,
    overlay: bool,
) -> Cluster:
    """A deployed cluster's row, before its payment and nodes: a fresh Ray token."""
    return Cluster(
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
        paid=paid,
        charged=0,
        refunded=0,
        payments=0,
        token=secrets.token_hex(32),
        generation=0,
        created_at=now,
        overlay=overlay,
    )
