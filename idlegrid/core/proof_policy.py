"""What a proof's outcome means for a device. Pure.

A result is ``verified`` or failed with one reason:

- ``wrong_answer``: an opening does not prove its check (a forged fingerprint, a
  bad Merkle path, a malformed reveal, a memory probe answered wrongly);
- ``timeout``: the commitment (or the reveal) came after its deadline;
- ``underperforms_claim``: the work was done, but slower than the kind's floor
  (``min_efficiency`` for CPUs and Apple silicon, ``gpu_min_efficiency`` for GPUs)
  of the claimed model's throughput;
- ``out_of_memory``: the device could not hold its claimed memory.

Consequences (``after_result``): a pass clears the failure streak. Failures in a
row reaching ``failures_to_demote`` make the device ``not_reward_ready``. A
*spoof strike* is evidence of lying rather than bad luck: a wrong answer, or a
throughput below ``spoof_fraction`` of the claim (a CPU posing as an H100);
``strikes_to_block`` of them block the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailReason(StrEnum):
    WRONG_ANSWER = "wrong_answer"
    TIMEOUT = "timeout"
    UNDERPERFORMS_CLAIM = "underperforms_claim"
    OUT_OF_MEMORY = "out_of_memory"


@dataclass(frozen=True, slots=True)
class ProofRules:
    target_s: float = 1.0
    min_efficiency: float = 0.2  # CPUs and Apple silicon
    # GPUs, provisional (docs/proof-of-compute.md, "On a real GPU"): from the H200's
    # figures an honest H200 should measure 0.48 to 0.53 of its FP32 peak with the
    # fast CUDA prover, and a claim 1.5 times the card 0.34 to 0.37 of that claim.
    gpu_min_efficiency: float = 0.4
    allowance_s: float = 3.0
    reveal_s: float = 30.0  # from the checks to the openings
    spoof_fraction: float = 0.05
    failures_to_demote: int = 3
    strikes_to_block: int = 2

    def efficiency_floor(self, kind: str) -> float:
        """The share of its claim a device of ``kind`` ("cpu", "apple", "gpu") must reach."""
        return self.gpu_min_efficiency if kind == "gpu" else self.min_efficiency


def judge(
    elapsed_s: float,
    deadline_s: float,
    work_flop: float,
    claimed_tflops: float,
    rules: ProofRules,
    kind: str,
) -> tuple[FailReason | None, float]:
    """The verdict on timing alone (the openings are checked separately), and the
    measured throughput in TFLOPS, for a device of ``kind``."""
    measured = work_flop / max(elapsed_s, 1e-9) / 1e12
    if elapsed_s > deadline_s:
        return FailReason.TIMEOUT, measured
    if measured < rules.efficiency_floor(kind) * claimed_tflops:
        return FailReason.UNDERPERFORMS_CLAIM, measured
    return None, measured


@dataclass(frozen=True, slots=True)
class Standing:
    failures: int = 0
    strikes: int = 0


@dataclass(frozen=True, slots=True)
class Consequence:
    standing: Standing
    demote: bool  # → not_reward_ready
    block: bool  # → blocked
    restore: bool  # a pass lifts not_reward_ready


def is_spoof(
    reason: FailReason | None, measured: float | None, claimed: float, rules: ProofRules
) -> bool:
    if reason is FailReason.WRONG_ANSWER:
        return True
    return (
        reason is FailReason.UNDERPERFORMS_CLAIM
        and measured is not None
        and measured < rules.spoof_fraction * claimed
    )


def after_result(
    standing: Standing,
    reason: FailReason | None,
    measured: float | None,
    claimed: float,
    rules: ProofRules,
) -> Consequence:
    if reason is None:
        return Consequence(Standing(0, standing.strikes), False, False, True)
    strikes = standing.strikes + is_spoof(reason, measured, claimed, rules)
    failures = standing.failures + 1
    return Consequence(
        Standing(failures, strikes),
        demote=failures >= rules.failures_to_demote,
        block=strikes >= rules.strikes_to_block,
        restore=False,
    )
