"""The agent's side of a proof (``worker/duties.prove_challenge``) against a scripted
server: the claimed memory is filled before the compute and held until the probes
are answered, then given back; a device that cannot hold it says so at the
commitment and still proves its throughput."""

from __future__ import annotations

from typing import Any

import numpy as np

from idlegrid.core import proof
from idlegrid.protocol import (
    ChallengeSpec,
    CommitRequest,
    CommitResponse,
    MemoryProbe,
    ProofStatus,
    ProofView,
    RevealRequest,
)
from idlegrid.worker.duties import prove_challenge
from idlegrid.worker.prover import MemoryHold, NumpyProver, TorchProver

SEED = b"\x05" * 32


class ScriptedServer:
    """Just enough of ``Client`` for ``prove_challenge``: one challenge, checked."""

    def __init__(self, memory_mb: int) -> None:
        self.spec = ChallengeSpec(
            id="c", seed=SEED.hex(), n=128, rounds=2, deadline_s=60.0, memory_mb=memory_mb
        )
        self.commit: CommitRequest | None = None
        self.reveal: RevealRequest | None = None
        self.probes = [MemoryProbe(index=1, nonce="ab" * 16)] if memory_mb else []

    def fetch_challenge(self, device_id: str, challenge_id: str) -> ChallengeSpec:
        return self.spec

    def commit_challenge(
        self, device_id: str, challenge_id: str, req: CommitRequest
    ) -> CommitResponse:
        self.commit = req
        return CommitResponse(checks=[(0, 5), (1, 100)], memory_probes=self.probes)

    def reveal_challenge(self, device_id: str, challenge_id: str, req: RevealRequest) -> ProofView:
        self.reveal = req
        challenge = proof.Challenge(SEED, self.spec.n, self.spec.rounds)
        assert self.commit is not None
        openings = [
            proof.Opening(o.round, o.row, tuple(o.leaf), tuple(bytes.fromhex(h) for h in o.path))
            for o in req.openings
        ]
        problem = proof.verify(
            challenge, bytes.fromhex(self.commit.root), [(0, 5), (1, 100)], openings
        )
        return ProofView.model_construct(
            id="c", status=ProofStatus.FAILED if problem else ProofStatus.VERIFIED, reason=problem
        )


class RecordingProver(TorchProver):
    """TorchProver on the CPU that logs the order of its steps."""

    def __init__(self, fail_compute_beside_memory: bool = False) -> None:
        super().__init__(["cpu"], fast=True)
        self.log: list[str] = []
        self.fail_compute_beside_memory = fail_compute_beside_memory
        self.holding = False

    def hold_memory(self, seed: bytes, megabytes: int) -> MemoryHold:
        self.log.append("fill")
        hold = super().hold_memory(seed, megabytes)
        self.holding = True

        def release() -> None:
            self.log.append("release")
            self.holding = False

        return MemoryHold(hold.read, release)

    def fingerprints(self, challenge: proof.Challenge, deadline: float) -> Any:
        self.log.append("compute" + (" beside memory" if self.holding else ""))
        if self.fail_compute_beside_memory and self.holding:
            raise MemoryError("out of memory beside the fill")
        return super().fingerprints(challenge, deadline)


def test_memory_is_filled_first_held_through_the_probes_and_given_back() -> None:
    server = ScriptedServer(memory_mb=3)
    prover = RecordingProver()
    result = prove_challenge(server, "d", "c", prover)  # type: ignore[arg-type]
    assert result.status is ProofStatus.VERIFIED, result.reason
    assert prover.log == ["fill", "compute beside memory", "release"]
    assert server.commit is not None and server.commit.memory == "ok"
    assert server.reveal is not None
    expected = proof.memory_answer(proof.memory_block(SEED, 1).tobytes(), bytes.fromhex("ab" * 16))
    assert server.reveal.memory_answers == [expected]


def test_compute_that_does_not_fit_beside_the_memory_reports_out_of_memory() -> None:
    server = ScriptedServer(memory_mb=2)
    prover = RecordingProver(fail_compute_beside_memory=True)
    prove_challenge(server, "d", "c", prover)  # type: ignore[arg-type]
    assert prover.log == ["fill", "compute beside memory", "release", "compute"]
    assert server.commit is not None and server.commit.memory == "out_of_memory"


def test_no_memory_asked_means_no_fill() -> None:
    server = ScriptedServer(memory_mb=0)
    result = prove_challenge(server, "d", "c", NumpyProver())  # type: ignore[arg-type]
    assert result.status is ProofStatus.VERIFIED
    assert server.commit is not None and server.commit.memory == "ok"
    assert np.array_equal(
        np.array(server.reveal.openings[0].leaf if server.reveal else []),
        proof.prove(proof.Challenge(SEED, 128, 2))[1][0, :64],
    )
