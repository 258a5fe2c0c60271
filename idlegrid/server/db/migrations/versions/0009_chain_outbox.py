"""chain outbox

Every token movement on chain is first recorded here, with the book postings it
backs, then sent, then finished (``idlegrid/ledger/outbox.py``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_ops",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(length=128), nullable=False, unique=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("asset", sa.String(length=8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("dest", sa.String(length=64), nullable=True),
        sa.Column("dest_owner", sa.String(length=64), nullable=True),
        sa.Column("signer", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.String(length=96), nullable=True),
        sa.Column("tx", sa.LargeBinary(), nullable=True),
        sa.Column("valid_until", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("undo", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
    )
    op.create_index("ix_chain_ops_status", "chain_ops", ["status", "seq"])
    op.create_index("ix_chain_ops_signature", "chain_ops", ["signature"])


def downgrade() -> None:
    op.drop_index("ix_chain_ops_signature", table_name="chain_ops")
    op.drop_index("ix_chain_ops_status", table_name="chain_ops")
    op.drop_table("chain_ops")
