"""clusters may form over the overlay: nodes' WireGuard keys, buyers' peers

``clusters.overlay`` says whether the cluster's nodes reach each other over its
WireGuard overlay (fixed when it is deployed); ``cluster_nodes.overlay_key`` is
the public key a node reported (its private key never leaves the device);
``overlay_peers`` are the buyers' own peers (``idlegrid clusters connect``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 12:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("overlay", sa.Boolean(), nullable=True))
    with op.batch_alter_table("cluster_nodes") as batch:
        batch.add_column(sa.Column("overlay_key", sa.String(44), nullable=True))
    op.create_table(
        "overlay_peers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("cluster_id", sa.String(32), sa.ForeignKey("clusters.id"), nullable=False),
        sa.Column("signer", sa.String(44), nullable=False),
        sa.Column("key", sa.String(44), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("cluster_id", "key", name="uq_overlay_peers_cluster_key"),
    )
    op.create_index("ix_overlay_peers_cluster", "overlay_peers", ["cluster_id"])


def downgrade() -> None:
    op.drop_index("ix_overlay_peers_cluster", table_name="overlay_peers")
    op.drop_table("overlay_peers")
    with op.batch_alter_table("cluster_nodes") as batch:
        batch.drop_column("overlay_key")
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("overlay")
