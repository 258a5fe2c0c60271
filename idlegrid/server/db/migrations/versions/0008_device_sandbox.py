"""device sandbox

How each device's agent runs buyers' work: ``sandbox_backend`` ("bubblewrap" or
"none") and what it enforces (``sandbox``). Devices registered before are "none"
until their agent registers again: rented only to their owners.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "sandbox_backend", sa.String(length=16), server_default="none", nullable=False
            )
        )
        batch_op.add_column(sa.Column("sandbox", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("sandbox")
        batch_op.drop_column("sandbox_backend")
