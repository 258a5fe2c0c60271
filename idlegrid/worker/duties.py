"""The agent's proof and connectivity duties.

``prove_challenge`` walks one challenge through fetch → memory fill → compute →
commit → reveal. ``ChallengeDuty`` runs it in a background thread when a heartbeat
announces a challenge, so heartbeats go on while the device computes.
``ConnectivityDuty`` measures latency, download and upload against the
control plane and reports them.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable

from idlegrid.core import proof
from idlegrid.core.connectivity import mbps
from idlegrid.protocol import (
    CommitRequest,
    ConnectivityReport,
    OpeningWire,
    ProofView,
    RevealRequest,
)
from idlegrid.sdk import Client
from idlegrid.worker.duty import AgentView
from idlegrid.worker.prover import MemoryHold, Prover, choose

log = logging.getLogger("idlegrid.worker.duties")


def prove_challenge(
    client: Client,
    device_id: str,
    challenge_id: str,
    prover: Prover,
    clock: Callable[[], float] = time.monotonic,
) -> ProofView:
    """Answer one challenge; ProofTimeout when the deadline passes mid-way.

    The claimed memory is filled first and held while the device computes, commits
    and answers the probes: the compute runs beside it, as a renter's job would, and a
    device that cannot hold it says so at the commitment. The fill is inside the timed
    window (its contents depend on the seed, secret until the fetch), so it is made
    fast rather than credited (docs/proof-of-compute.md, "Memory")."""
    spec = client.fetch_challenge(device_id, challenge_id)
    start = clock()
    challenge = proof.Challenge(bytes.fromhex(spec.seed), spec.n, spec.rounds)
    hold: MemoryHold | None = None
    memory = "ok"
    try:
        if spec.memory_mb:
            try:
                hold = prover.hold_memory(challenge.seed, spec.memory_mb)
            except MemoryError as exc:
                log.warning("cannot hold %d MiB: %s", spec.memory_mb, exc)
                memory = "out_of_memory"
        try:
            fps = prover.fingerprints(challenge, start + spec.deadline_s)
        except MemoryError as exc:
            if hold is None:
                raise
            # The fill fits but the product beside it does not: the claimed memory
            # is not all usable. Say so, and prove the throughput without it.
            log.warning("cannot compute beside %d MiB: %s", spec.memory_mb, exc)
            hold.release()
            hold, memory = None, "out_of_memory"
            fps = prover.fingerprints(challenge, start + spec.deadline_s)
        tree = proof.commit(challenge, fps)
        answer = client.commit_challenge(
            device_id,
            challenge_id,
            CommitRequest(
                root=tree.root.hex(),
                prover=prover.name,
                elapsed_s=clock() - start,
                memory="ok" if memory == "ok" else "out_of_memory",
            ),
        )
        if isinstance(answer, ProofView):
            return answer  # refused at the commitment (late, out of memory)
        openings = []
        for round_, row in answer.checks:
            op = proof.open_check(challenge, tree, fps, round_, row)
            openings.append(
                OpeningWire(
                    round=op.round,
                    row=op.row,
                    leaf=list(op.leaf_fps),
                    path=[h.hex() for h in op.path],
                )
            )
        answers = (
            [hold.answer(p.index, bytes.fromhex(p.nonce)) for p in answer.memory_probes]
            if hold
            else []
        )
    finally:
        if hold is not None:
            hold.release()  # before the reveal's round trip: the memory is the renter's
    return client.reveal_challenge(
        device_id, challenge_id, RevealRequest(openings=openings, memory_answers=answers)
    )


class ChallengeDuty:
    name = "challenge"

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.prover: Prover | None = None
        self._warm = False
        self._thread: threading.Thread | None = None
        self.last_result: ProofView | None = None

    def run(self, agent: AgentView) -> None:
        challenge_id = agent.pending_challenge
        if challenge_id is None or (self._thread is not None and self._thread.is_alive()):
            return
        agent.pending_challenge = None
        if self.prover is None:
            self.prover = choose()  # imports torch, if any, once
            log.info("prover: %s", self.prover.name)
        self._thread = threading.Thread(
            target=self._prove,
            args=(agent, challenge_id, self.prover),
            name="prover",
            daemon=True,
        )
        self._thread.start()

    def _prove(self, agent: AgentView, challenge_id: str, prover: Prover) -> None:
        if not self._warm:
            # Before the fetch, which starts the server's clock: a cold CUDA start and
            # the public B pool cost an H200 about 0.4 s, a fifth of its proof.
            self._warm = True
            try:
                prover.warm_up(proof.size_for(prover.kind))
            except Exception as exc:  # the proof itself will say what is wrong
                log.warning("prover warm-up failed: %s", exc)
        try:
            result = prove_challenge(agent.client, agent.device_id, challenge_id, prover)
        except Exception as exc:  # logged, never fatal: the server times it out
            log.warning("challenge %s not answered: %s", challenge_id, exc)
            return
        self.last_result = result
        log.info(
            "proof %s: %s%s (%s TFLOPS measured)",
            result.id,
            result.status.value,
            f" ({result.reason})" if result.reason else "",
            f"{result.measured_tflops:.3f}" if result.measured_tflops else "-",
        )


class ConnectivityDuty:
    name = "connectivity"

    def __init__(self, interval_s: float = 6 * 3600, nbytes: int = 4 * 1024 * 1024) -> None:
        self.interval_s = interval_s
        self.nbytes = nbytes

    def run(self, agent: AgentView) -> None:
        client = agent.client
        rtts = []
        for _ in range(5):
            t = time.perf_counter()
            client.health()
            rtts.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = client.speedtest_download(self.nbytes)
        down = mbps(got, time.perf_counter() - t)
        t = time.perf_counter()
        client.speedtest_upload(bytes(self.nbytes))
        up = mbps(self.nbytes, time.perf_counter() - t)
        view = client.report_connectivity(
            agent.device_id,
            ConnectivityReport(
                latency_ms=statistics.median(rtts) * 1000, download_mbps=down, upload_mbps=up
            ),
        )
        log.info(
            "connectivity: %.1f ms, %.0f/%.0f Mbit/s down/up: tier %d (%s)",
            view.latency_ms,
            down,
            up,
            view.tier,
            view.tier_name,
        )
