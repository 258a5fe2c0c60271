"""claimable rewards and columnar blocks

Blocks store their published documents as the canonical bytes that were hashed
(``inputs_json``, ``outputs_json``), block rewards are keyed by device first,
rewards are credited per block and claimed (``reward_credits``,
``reward_claims``) instead of being posted to every wallet by the block, and
uptime buckets are indexed by hour (a block reads its window's); cluster nodes
record when they were assigned (a replacement that never joins is given up on).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 07:43:49.161010
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _canonical(text: object) -> bytes | None:
    if text is None:
        return None
    data = json.loads(text) if isinstance(text, str | bytes) else text
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def upgrade() -> None:
    with op.batch_alter_table("cluster_nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("assigned_at", sa.Double(), nullable=True))
    # Blocks read one window's uptime buckets (and the few after it), not all history.
    op.create_index("ix_device_uptime_hour", "device_uptime", ["hour"])
    op.create_table(
        "reward_claims",
        sa.Column("recipient", sa.String(length=44), nullable=False),
        sa.Column("through", sa.BigInteger(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("transfer_id", sa.String(length=128), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("recipient", "through"),
        sa.UniqueConstraint("transfer_id"),
    )
    op.create_table(
        "reward_credits",
        sa.Column("recipient", sa.String(length=44), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["number"], ["blocks.number"]),
        sa.PrimaryKeyConstraint("recipient", "number"),
    )

    # block_rewards: keyed (device_id, number), with no second index.
    op.create_table(
        "block_rewards_v2",
        sa.Column("device_id", sa.String(length=44), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.String(length=64), nullable=False),
        sa.Column("reasons", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(["number"], ["blocks.number"]),
        sa.PrimaryKeyConstraint("device_id", "number"),
    )
    op.execute(
        "INSERT INTO block_rewards_v2 (device_id, number, units, score, reasons) "
        "SELECT device_id, number, units, score, reasons FROM block_rewards"
    )
    op.drop_table("block_rewards")
    op.rename_table("block_rewards_v2", "block_rewards")

    # blocks: the documents as the bytes that were hashed.
    with op.batch_alter_table("blocks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inputs_json", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("outputs_json", sa.LargeBinary(), nullable=True))
    conn = op.get_bind()
    blocks = sa.table(
        "blocks",
        sa.column("number", sa.BigInteger()),
        sa.column("inputs", sa.JSON()),
        sa.column("outputs", sa.JSON()),
        sa.column("inputs_json", sa.LargeBinary()),
        sa.column("outputs_json", sa.LargeBinary()),
    )
    for number, inputs, outputs in conn.execute(
        sa.select(blocks.c.number, blocks.c.inputs, blocks.c.outputs)
    ).all():
        conn.execute(
            blocks.update()
            .where(blocks.c.number == number)
            .values(inputs_json=_canonical(inputs), outputs_json=_canonical(outputs))
        )
    with op.batch_alter_table("blocks", schema=None) as batch_op:
        batch_op.drop_column("inputs")
        batch_op.drop_column("outputs")
    if conn.dialect.name == "postgresql":
        # Stored out of line but not compressed: pglz over hundreds of megabytes of
        # JSON costs seconds per block (benchmarks/blocks.py), and disk is cheap.
        for column in ("inputs_json", "outputs_json"):
            op.execute(f"ALTER TABLE blocks ALTER COLUMN {column} SET STORAGE EXTERNAL")


def downgrade() -> None:
    with op.batch_alter_table("blocks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outputs", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("inputs", sa.JSON(), nullable=True))
        batch_op.drop_column("outputs_json")
        batch_op.drop_column("inputs_json")
    op.create_table(
        "block_rewards_v1",
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(length=44), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.String(length=64), nullable=False),
        sa.Column("reasons", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(["number"], ["blocks.number"]),
        sa.PrimaryKeyConstraint("number", "device_id"),
    )
    op.execute(
        "INSERT INTO block_rewards_v1 (number, device_id, units, score, reasons) "
        "SELECT number, device_id, units, score, reasons FROM block_rewards"
    )
    op.drop_table("block_rewards")
    op.rename_table("block_rewards_v1", "block_rewards")
    op.create_index("ix_block_rewards_device_id", "block_rewards", ["device_id"])
    op.drop_table("reward_credits")
    op.drop_table("reward_claims")
    op.drop_index("ix_device_uptime_hour", table_name="device_uptime")
    with op.batch_alter_table("cluster_nodes", schema=None) as batch_op:
        batch_op.drop_column("assigned_at")
