"""blocks count the devices they do not publish

A block publishes the devices with a passed proof or a stake and counts the
rest (``services/blocks.py``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blocks") as batch:
        batch.add_column(sa.Column("unlisted", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("blocks") as batch:
        batch.drop_column("unlisted")
