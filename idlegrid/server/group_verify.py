"""Group verification of proofs of compute: reveals that arrive together are
verified together.

At the GPU size the verifier's cost is reading each public 4096 × 4096 B from
memory; ``proof.verify_many`` reads it once for a whole batch. The verifier does
not wait to fill a batch (that would slow every reveal when the network is
quiet): the first reveal verifies at once, and reveals that arrive while it
runs are verified together next, as a database's group commit does. So under
load batches grow by themselves and each proof costs less, and a lone reveal
costs what it always did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from idlegrid.core import proof


@dataclass(slots=True)
class _Job:
    claim: proof.Claim
    done: bool = False
    result: str | None = None
    error: BaseException | None = field(default=None)


class GroupVerifier:
    def __init__(
        self, verify_many: Callable[[Sequence[proof.Claim]], list[str | None]] = proof.verify_many
    ) -> None:
        self._verify_many = verify_many
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._busy = False
        self.batches: list[int] = []
        """Sizes of the last batches (at most 1,000), for tests and metrics."""

    def verify(self, claim: proof.Claim) -> str | None:
        """``proof.verify(*claim)``, batched with whatever other claims are waiting."""
        job = _Job(claim)
        with self._cond:
            self._pending.append(job)
            while self._busy and not job.done:
                self._cond.wait()
            if not job.done:  # nobody is verifying: lead a batch of all that waits
                self._busy = True
                batch, self._pending = self._pending, []
                self.batches = [*self.batches[-999:], len(batch)]
        if not job.done:
            self._run(batch)
        if job.error is not None:
            raise job.error
        return job.result

    def _run(self, batch: list[_Job]) -> None:
        error: BaseException | None = None
        try:
            results = self._verify_many([j.claim for j in batch])
        except Exception as exc:  # every claim of the batch gets the error
            results, error = [None] * len(batch), exc
        with self._cond:
            for j, result in zip(batch, results, strict=True):
                j.result, j.error, j.done = result, error, True
            self._busy = False
            self._cond.notify_all()
