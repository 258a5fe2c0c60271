"""The ledger's tables: the book's accounts, transfers and chain head, and the chain outbox.

Declared on the one ``Base`` (``idlegrid/orm.py``) with the rest of the control
plane's tables (``server/db/models.py``, which names these too), so the Alembic
migrations (``server/db/migrations``) describe them all; they live here because
the book (``book.py``) and the outbox (``outbox.py``) are theirs. Times are Unix
seconds (double precision), as on the wire.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from idlegrid.orm import Base


class LedgerAccount(Base):
    """A book account: running sums in smallest units (see core/ledger.py).
    BigInteger holds them: the whole IO supply is 8·10¹⁶ units, under 2⁶³."""

    __tablename__ = "ledger_accounts"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    asset: Mapped[str] = mapped_column(String(8))
    no_overdraft: Mapped[bool] = mapped_column(Boolean)
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[float] = mapped_column(Double)


class LedgerTransfer(Base):
    """An immutable transfer; ``seq`` orders the hash chain."""

    __tablename__ = "ledger_transfers"
    __table_args__ = (
        Index("ix_ledger_transfers_debit", "debit", "seq"),
        Index("ix_ledger_transfers_credit", "credit", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    id: Mapped[str] = mapped_column(String(96), unique=True)
    debit: Mapped[str] = mapped_column(String(96), ForeignKey("ledger_accounts.id"))
    credit: Mapped[str] = mapped_column(String(96), ForeignKey("ledger_accounts.id"))
    asset: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    pending_id: Mapped[str | None] = mapped_column(String(96), index=True)
    # For a pending transfer: set once it is posted or voided.
    closed_by: Mapped[str | None] = mapped_column(String(96))
    code: Mapped[str] = mapped_column(String(32), index=True)
    memo: Mapped[str] = mapped_column(String(256))
    at: Mapped[float] = mapped_column(Double)
    hash: Mapped[str] = mapped_column(String(64))


class LedgerHead(Base):
    """The end of the hash chain: one row, locked by every posting."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class ChainOperation(Base):
    """A token movement the network owes the chain, recorded in the same transaction
    as the book postings it backs, then sent, then finished (``ledger/outbox.py``).

    ``signature``/``tx``/``valid_until``: the transaction last prepared for it, stored
    before it is sent. ``undo``: book transfers to post if it fails for good.
    """

    __tablename__ = "chain_ops"
    __table_args__ = (Index("ix_chain_ops_status", "status", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    id: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    asset: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str | None] = mapped_column(String(64))
    dest: Mapped[str | None] = mapped_column(String(64))
    dest_owner: Mapped[str | None] = mapped_column(String(64))
    signer: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str | None] = mapped_column(String(96), index=True)
    tx: Mapped[bytes | None] = mapped_column(LargeBinary)
    valid_until: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(512))
    undo: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
