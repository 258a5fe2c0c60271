"""blocks keep what their explorer page shows, and whether they verified

``page_json`` holds the first rows of the nominated and excluded devices, the
pools and the notes (a few kilobytes, written when the block is published), so
a page view never parses the block's documents; ``verified`` is set by the
blocks loop once it has recomputed the block from its published inputs.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 07:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blocks") as batch:
        batch.add_column(sa.Column("page_json", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("verified", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blocks") as batch:
        batch.drop_column("verified")
        batch.drop_column("page_json")
