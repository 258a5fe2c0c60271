"""Clusters as the API shows them: status, bill, nodes, and how to reach Ray."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idlegrid.core.clusters import ACTIVE, ClusterStatus
from idlegrid.core.fees import format_amount
from idlegrid.protocol import ClusterNodeView, ClusterView
from idlegrid.server.db.models import Cluster, ClusterNode, Device


def cluster_view(db: Session, c: Cluster, now: float, with_secrets: bool) -> ClusterView:
    """A cluster as its buyer (``with_secrets``: its Ray token) or anyone sees it."""
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
        ray_client_address=f"ray://{c.node_ip}:{c.client_port}" if up and c.client_port else None,
        dashboard_url=f"http://{c.node_ip}:{c.dashboard_port}" if up and c.dashboard_port else None,
        ray_token=c.token if with_secrets else None,
    )
