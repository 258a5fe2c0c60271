"""The cluster machine's money instructions as book transfers.

Each cluster has an escrow account, ``escrow:cluster:<id>:<asset>``: prepayments
go in, and providers' slices, fees and refunds come out. Every transfer's id
names what it pays for, so a retried transaction records it once (the book's
rule): a slice by its node and end, a refund or fee by the cluster.
"""

from __future__ import annotations

from idlegrid.core.cluster_machine import (
    Instruction,
    PayNode,
    RefundRest,
    RefundSlot,
    TakeBuyerFee,
    TakePayment,
)
from idlegrid.core.ledger import Transfer
from idlegrid.server.db.models import Cluster, ClusterNode
from idlegrid.server.services.ledger import fees_account, user_account


def cluster_escrow(cluster_id: str, asset: str) -> str:
    return f"escrow:cluster:{cluster_id}:{asset}"


def transfers(
    c: Cluster, rows: dict[str, ClusterNode], ins: Instruction
) -> tuple[list[str], list[Transfer]]:
    """(accounts to open first, transfers to post) for one money instruction.
    ``TakePayment`` counts the cluster's payments (its transfer id is the count)."""
    asset = c.currency
    escrow = cluster_escrow(c.id, asset)
    buyer = user_account(c.owner, asset)
    match ins:
        case TakePayment(amount=amount):
            c.payments += 1
            memo = f"cluster {c.name}"
            tid = f"escrow:{c.id}:{c.payments}"
            return [escrow], [Transfer(tid, buyer, escrow, asset, amount, code="escrow", memo=memo)]
        case PayNode():
            payee = user_account(ins.payee, asset)
            tag = f"{c.id}:{rows[ins.device_id].id}:{ins.until_ms}"
            out = [Transfer(f"pay:{tag}", escrow, payee, asset, ins.provider, code="payout")]
            if ins.fee:
                fees = fees_account(asset)
                out.append(Transfer(f"fee:{tag}", escrow, fees, asset, ins.fee, code="fee"))
            return [payee], out
        case RefundSlot(device_id=device_id, amount=amount):
            tid = f"slot-refund:{c.id}:{rows[device_id].id}"
            memo = f"device {device_id} lost, no replacement"
            return [], [Transfer(tid, escrow, buyer, asset, amount, code="refund", memo=memo)]
        case TakeBuyerFee(amount=amount):
            fees = fees_account(asset)
            return [], [Transfer(f"buyer-fee:{c.id}", escrow, fees, asset, amount, code="fee")]
        case RefundRest(amount=amount):
            return [], [Transfer(f"refund:{c.id}", escrow, buyer, asset, amount, code="refund")]
    raise ValueError(f"not a money instruction: {ins!r}")
