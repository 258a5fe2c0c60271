"""Group verification (server/group_verify.py): concurrent reveals share batches,
each gets its own verdict, and an error reaches every claim of its batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from idlegrid.core import proof
from idlegrid.server.group_verify import GroupVerifier


def _claim(i: int) -> proof.Claim:
    return (proof.Challenge(bytes([i]) * 32, 64, 1), b"root", [(0, i)], [])


def test_concurrent_claims_share_batches_and_keep_their_own_verdicts() -> None:
    seen: list[int] = []
    first = threading.Event()

    def slow_many(claims: Sequence[proof.Claim]) -> list[str | None]:
        seen.append(len(claims))
        first.set()
        time.sleep(0.05)  # while this batch runs, the others queue
        return [None if c[2][0][1] % 2 == 0 else f"claim {c[2][0][1]} wrong" for c in claims]

    verifier = GroupVerifier(slow_many)
    with ThreadPoolExecutor(16) as pool:
        lead = pool.submit(verifier.verify, _claim(0))
        first.wait(5)
        rest = list(pool.map(verifier.verify, [_claim(i) for i in range(1, 16)]))
    assert lead.result() is None
    assert rest == [None if i % 2 == 0 else f"claim {i} wrong" for i in range(1, 16)]
    assert sum(seen) == 16 and max(seen) > 1 and seen == verifier.batches


def test_a_lone_claim_is_verified_at_once_and_errors_reach_the_batch() -> None:
    verifier = GroupVerifier()
    challenge = proof.Challenge(b"\x05" * 32, 128, 2)
    tree, fps = proof.prove(challenge)
    checks = proof.select_checks(challenge, b"entropy", 8)
    ops = [proof.open_check(challenge, tree, fps, r, row) for r, row in checks]
    assert verifier.verify((challenge, tree.root, checks, ops)) is None
    assert verifier.batches == [1]

    def broken(claims: Sequence[proof.Claim]) -> list[str | None]:
        raise RuntimeError("the verifier broke")

    with pytest.raises(RuntimeError, match="broke"):
        GroupVerifier(broken).verify(_claim(1))
