"""The proof of compute on a real NVIDIA GPU: what the agent detects, what the server
plans for it, where the CUDA prover's time goes, what the verifier says, and whether a
device claiming a faster model is caught.

Run it, on a machine with CUDA and ``torch``, as::

    .venv/bin/python benchmarks/gpu_proof.py [--memory-mb 1024] [--compare-rounds 2]
                                             [--cheat b200-sxm-180gb,rtx-5090,...]
                                             [--repeats 3] [--profile-rounds 32]
                                             [--model KEY] [--json] [--save results.json]

Without a CUDA device (no ``torch``, or torch sees no GPU) it prints one line,
``no CUDA device: ...``, and exits 0 (``--device cpu`` runs it on the CPU instead, with
``--n`` and ``--target-s`` to keep it small: a smoke test of this script, not a
measurement). Exit 1 means a check that must hold failed (the CUDA fingerprints or the
memory image differ from numpy's, or an honest proof did not verify); exit 2 means the
GPU is not in the catalog, so there is no claim to plan a challenge for (``--model KEY``
plans for that catalog model instead). ``benchmarks/gpu_check.sh`` is the whole device
check (the CUDA tests, then this script); docs/proof-of-compute.md has its figures on an
H200.

It prints (``--json``: one JSON object instead; ``--save PATH``: that object written
to PATH as well as the report):

1. **Detected hardware**: ``detect_hardware()`` (NVML), ``catalog.classify``, the
   model's reward multiplier and claimed FP32 TFLOPS, beside what torch reports.

2. **Where the prover's time goes** (``--profile-rounds`` rounds of n = 4096, CUDA
   events, ms per round): generating A, the FP32 product, the fingerprints, and a whole
   round, each for the *general* path (``TorchProver(fast=False)``: ``core.proof``'s
   arithmetic in torch, which is what the CUDA prover ran before) and the *fast* one
   (the CUDA default: in-place generation with a value table, float64 fingerprints);
   variants beside it (the fingerprints as one (n × 2) float64 product, the reduction
   mod p as a select, and A built in row tiles that stay in L2); then R rounds end to
   end, wall clock, as the old loop ran
   them (a host copy after every round) and as ``TorchProver.fingerprints`` runs them
   now (queued, one copy at the end).

3. **Proofs as the agent makes them**, each planned as ``services/proofs.py`` plans one
   (``proof.plan`` with the claimed throughput, ``proof_target_s`` 1 s, n =
   ``size_for("gpu")``, the deadline from ``proof.deadline_s`` at the GPU floor of the
   default ``ProofRules``) and run in ``worker/duties.prove_challenge``'s order: fill the
   claimed memory (``hold_memory``: ``MEMORY_FRACTION`` of the model's memory), compute
   the fingerprints beside it, commit, release. The timed window is fill + fingerprints +
   commit (the server's also holds one round trip). Judged by ``proof_policy.judge`` for
   a GPU, and by the old floor (0.2) beside it. ``TorchProver.warm_up`` runs first, as
   the agent runs it before its first fetch; its time is shown. Rows: *honest*
   (``--repeats`` times), then *cheats*: the same GPU claiming another catalog model
   (``--cheat``, ``KEY`` or ``KEY:GPUS``), each filling that model's memory ask, or this
   GPU's own claim times a factor (``xF``: x1.5 claims 1.5 times the card). A
   cheat is caught when the verdict is ``timeout``, ``underperforms_claim`` or
   ``out_of_memory`` (the server judges the throughput first, then the memory).

4. **Checks on an honest proof**: k = ``DEFAULT_CHECKS`` checks verified on the CPU
   (cold and warm), a forged fingerprint refused, and the first ``--compare-rounds``
   rounds recomputed by ``NumpyProver``, which must equal the CUDA fingerprints.

5. **Memory**: the fill at the server's size for this GPU's claim, generated on the
   device (``TorchProver.fill``) with 32-block and 256-block kernels, and as (a·t + b)
   mod p in one go (``fill_affine``, the long int64 division), four probes answered and
   checked as the server checks them; the keys' derivation alone on the CPU; and the
   old path (numpy's blocks copied over) timed at ``--memory-mb``.

6. **Other exact paths** (what a modified agent could use): the same A·B with TF32,
   with bf16 inputs and an FP32 output where torch offers it, and with int8 inputs and
   an int32 output (``torch._int_mm``): whether each is exact, and its rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from common import finish, machine, peak_rss_mb

from idlegrid.catalog import load_catalog
from idlegrid.core import proof
from idlegrid.core.proof_policy import ProofRules, judge
from idlegrid.protocol import Classification
from idlegrid.worker.hardware import detect_hardware
from idlegrid.worker.prover import NumpyProver, ProofTimeout, TorchProver

DEVICE = "cuda:0"
KIND = "gpu"
MEMORY_FRACTION = 0.8  # ServerSettings.proof_memory_fraction
MEMORY_PROBES = 4  # ServerSettings.proof_memory_probes
DEFAULT_CHEATS = "b200-sxm-180gb,rtx-5090,b200-sxm-180gb:8,x1.25,x1.5"
OLD_FLOOR = 0.2  # the GPU floor before the H200 calibration
MIB = 1024 * 1024

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def cuda_problem() -> str | None:
    """Why there is nothing to measure here, or None when a CUDA device is present."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU"
    return None


def is_cuda() -> bool:
    return DEVICE.startswith("cuda")


def synchronize(torch: Any) -> None:
    if is_cuda():
        torch.cuda.synchronize()


MEMORY_SCALE = 1.0  # --memory-scale: a smoke test on the CPU holds a sliver of it


def memory_ask(vram_gb: float) -> int:
    """What the server asks a GPU of that model to hold (services/proofs.py)."""
    return int(vram_gb * 1024 * MEMORY_FRACTION * MEMORY_SCALE)


def guarded(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run one section; a failure is recorded and the others still run."""
    try:
        return fn()
    except Exception as exc:  # a device-time budget: keep what the other sections find
        progress(f"{name}: FAILED: {type(exc).__name__}: {exc}")
        results["failures"].append(f"{name}: {type(exc).__name__}: {exc}")
        return None


# -- 1: detection ----------------------------------------------------------------------------


def detected(hw: Any, cls: Any, claimed: float) -> dict[str, Any]:
    catalog = load_catalog()
    model = catalog.get(cls.model) if cls.model else None
    return {
        "kind": hw.kind.value,
        "gpus": [{"index": g.index, "name": g.name, "vram_mb": g.vram_mb} for g in hw.gpus],
        "driver": hw.gpu_driver,
        "cuda": hw.cuda_version,
        "model": cls.model,
        "model_name": model.name if model else None,
        "processors": cls.processors,
        "reason": cls.reason,
        "multiplier": model.multiplier if model else None,
        "model_vram_gb": model.vram_gb if model else None,
        "claimed_tflops": claimed,
    }


def torch_view(torch: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if is_cuda():
        props = torch.cuda.get_device_properties(0)
        out["torch_device"] = props.name
        out["torch_memory_mib"] = props.total_memory // MIB
        out["multiprocessors"] = props.multi_processor_count
        out["capability"] = f"{props.major}.{props.minor}"
    return out


# -- 2: profile ------------------------------------------------------------------------------


def per_call_ms(torch: Any, fn: Callable[[], Any], reps: int) -> float:
    """Device time per call of ``fn`` (queued back to back; CUDA events where there are)."""
    fn()
    synchronize(torch)
    if not is_cuda():
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return 1000 * (time.perf_counter() - t0) / reps
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) / reps


def matrix_by_select(prover: TorchProver, key: tuple[int, int], n: int, device: Any) -> Any:
    """The fast generation with the reduction mod p as a select instead of remainder_."""
    torch = prover.torch
    a, b = key
    p = proof.P
    row_part = (prover._const("rows", device, n) * a).remainder_(p)
    col_part = (prover._const("cols", device, n) * a).add_(b).remainder_(p)
    x = torch.add(row_part[:, None], col_part[None, :])
    x = torch.where(x >= p, x - p, x)
    x.mul_(x)
    x.bitwise_right_shift_(31)
    x.bitwise_and_(255)
    return torch.take(prover._const("table", device, 256), x)


def matrix_in_tiles(
    prover: TorchProver, key: tuple[int, int], n: int, device: Any, tile: int = 512
) -> Any:
    """The fast generation, ``tile`` rows at a time (a 16 MiB int64 tile stays in L2)."""
    torch = prover.torch
    a, b = key
    p = proof.P
    row_part = (prover._const("rows", device, n) * a).remainder_(p)
    col_part = (prover._const("cols", device, n) * a).add_(b).remainder_(p)
    table = prover._const("table", device, 256)
    out = torch.empty((n, n), dtype=torch.float32, device=device)
    x = torch.empty((tile, n), dtype=torch.int64, device=device)
    for s in range(0, n, tile):
        rows = min(tile, n - s)
        xs = x[:rows]
        torch.add(row_part[s : s + rows, None], col_part[None, :], out=xs)
        xs.remainder_(p)
        xs.mul_(xs)
        xs.bitwise_right_shift_(31)
        xs.bitwise_and_(255)
        out[s : s + rows] = torch.take(table, xs)
    return out


def fingerprints_by_gemm(prover: TorchProver, c: Any, w: tuple[Any, Any]) -> Any:
    """The fast fingerprints with one (n × 2) float64 product instead of two mv."""
    torch = prover.torch
    c64 = c.to(torch.float64)
    c64.mul_(c64)
    s = (c64 @ torch.stack(w, dim=1)).to(torch.int64)
    return (s[:, 1] * 1024 + s[:, 0]) % proof.P


def fill_affine(prover: TorchProver, seed: bytes, megabytes: int) -> list[Any]:
    """The memory image as (a·t + b) mod p directly (addcmul, then a reduction of values
    up to 2⁴⁹: int64 division's long path), 32 blocks per kernel pair."""
    torch = prover.torch
    device = prover.devices[0]
    blocks = proof.memory_blocks(megabytes)
    words = proof.MEMORY_WORDS
    idx = prover._const("cols", device, words)[None, :]
    keys = torch.from_numpy(proof.memory_keys(seed, 0, blocks)).to(device)
    held = []
    for s in range(0, blocks, 1024):
        segment = torch.empty((min(1024, blocks - s), words), dtype=torch.int64, device=device)
        for c in range(0, len(segment), 32):
            rows, part = keys[s + c : s + c + 32], segment[c : c + 32]
            torch.addcmul(rows[:, 1:], rows[:, :1], idx, out=part)
            part.remainder_(proof.P)
        held.append(segment)
    return held


def old_loop(prover: TorchProver, challenge: proof.Challenge) -> proof.IntArray:
    """The CUDA prover's loop before this change: general path, a host copy each round."""
    torch = prover.torch
    device = prover.devices[0]
    n = challenge.n
    w = torch.from_numpy(proof.weights(challenge.seed, n)).to(device)
    rows = torch.arange(n, dtype=torch.int64, device=device)
    out = np.empty((challenge.rounds, n), dtype=np.int64)
    for r in range(challenge.rounds):
        a = prover.block(proof.a_key(challenge.seed, r), rows, n).to(torch.float32)
        c = (a @ prover._b(device, n, proof.pool_index(challenge.seed, r))).to(torch.int64)
        out[r] = (((c * c) * w).sum(dim=1) % proof.P).cpu().numpy()
    return out


def profile(torch: Any, n: int, rounds: int) -> dict[str, Any]:
    device = torch.device(DEVICE)
    general = TorchProver([DEVICE], fast=False)
    fast = TorchProver([DEVICE], fast=True)
    seed = os.urandom(32)
    key = proof.a_key(seed, 0)
    for p in (general, fast):
        p.warm_up(n)
    b = fast._b(device, n, 0)
    a = fast.matrix(key, n, device)
    c = a @ b
    w_general = general.weights(seed, n, device)
    w_fast = fast.weights(seed, n, device)
    reps = max(4, rounds)
    gemm_ms = per_call_ms(torch, lambda: a @ b, reps)
    split: dict[str, dict[str, float]] = {}
    for name, p, w in (("general", general, w_general), ("fast", fast, w_fast)):
        split[name] = {
            "generate_a_ms": per_call_ms(torch, lambda p=p: p.matrix(key, n, device), reps),
            "product_ms": gemm_ms,
            "fingerprints_ms": per_call_ms(torch, lambda p=p, w=w: p.row_fingerprints(c, w), reps),
            "round_ms": per_call_ms(torch, lambda p=p, w=w: p._round(device, seed, 1, n, w), reps),
        }
    variants = {
        "fingerprints_one_gemm_ms": per_call_ms(
            torch, lambda: fingerprints_by_gemm(fast, c, w_fast), reps
        ),
        "generate_a_select_ms": per_call_ms(
            torch, lambda: matrix_by_select(fast, key, n, device), reps
        ),
        "generate_a_tiles_ms": per_call_ms(
            torch, lambda: matrix_in_tiles(fast, key, n, device), reps
        ),
    }
    same = {
        "select": bool(torch.equal(matrix_by_select(fast, key, n, device), a)),
        "tiles": bool(torch.equal(matrix_in_tiles(fast, key, n, device), a)),
        "general": bool(torch.equal(general.matrix(key, n, device), a)),
        "fingerprints": bool(
            torch.equal(general.row_fingerprints(c, w_general), fast.row_fingerprints(c, w_fast))
        ),
        "one_gemm": bool(
            torch.equal(fingerprints_by_gemm(fast, c, w_fast), fast.row_fingerprints(c, w_fast))
        ),
    }
    challenge = proof.Challenge(seed, n, rounds)
    t0 = time.perf_counter()
    by_old = old_loop(general, challenge)
    old_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    by_new = fast.fingerprints(challenge, math.inf)
    new_s = time.perf_counter() - t0
    flop = 2.0 * n**3
    out = {
        "n": n,
        "rounds": rounds,
        "split": {k: {m: round(v, 4) for m, v in d.items()} for k, d in split.items()},
        "variants": {k: round(v, 4) for k, v in variants.items()},
        "identical": same | {"loops": bool(np.array_equal(by_old, by_new))},
        "product_tflops": round(flop / (gemm_ms / 1000) / 1e12, 2),
        "old_loop_ms_per_round": round(1000 * old_s / rounds, 4),
        "old_loop_tflops": round(flop * rounds / old_s / 1e12, 2),
        "new_loop_ms_per_round": round(1000 * new_s / rounds, 4),
        "new_loop_tflops": round(flop * rounds / new_s / 1e12, 2),
    }
    f = out["split"]["fast"]
    g = out["split"]["general"]
    progress(
        f"profile: product {gemm_ms:.3f} ms ({out['product_tflops']} TFLOPS); generate A "
        f"{g['generate_a_ms']:.3f} → {f['generate_a_ms']:.3f} ms; fingerprints "
        f"{g['fingerprints_ms']:.3f} → {f['fingerprints_ms']:.3f} ms; round {g['round_ms']:.3f}"
        f" → {f['round_ms']:.3f} ms; loop {out['old_loop_ms_per_round']:.3f} → "
        f"{out['new_loop_ms_per_round']:.3f} ms/round; variants {out['variants']}; same {same}"
    )
    return out  # its tensors go with this frame; the caller releases them


def release(torch: Any) -> None:
    import gc

    gc.collect()
    if is_cuda():
        torch.cuda.empty_cache()


# -- 3: proofs -------------------------------------------------------------------------------


def agent_proof(
    prover: TorchProver,
    case: str,
    claim: str,
    claimed: float,
    memory_mb: int,
    challenge: proof.Challenge,
    rules: ProofRules,
) -> tuple[dict[str, Any], proof.IntArray | None, proof.MerkleTree | None]:
    """One challenge in prove_challenge's order (fill, compute beside it, commit), judged
    as the server judges it."""
    floor = rules.efficiency_floor(KIND)
    deadline = proof.deadline_s(challenge, claimed, floor, rules.allowance_s)
    fps = tree = None
    note = ""
    memory = "ok"
    hold = None
    timed_out = False
    torch = prover.torch
    if is_cuda():
        torch.cuda.reset_peak_memory_stats()
    start = time.monotonic()
    if memory_mb:
        try:
            hold = prover.hold_memory(challenge.seed, memory_mb)
        except MemoryError as exc:
            memory = "out_of_memory"
            note = f"could not hold {memory_mb:,} MiB: {str(exc).splitlines()[0][:80]}"
    t_fill = time.monotonic()
    free_beside = torch.cuda.mem_get_info()[0] // MIB if is_cuda() else None
    try:
        fps = prover.fingerprints(challenge, start + deadline)
        t_fps = time.monotonic()
        tree = proof.commit(challenge, fps)
    except ProofTimeout as exc:
        t_fps = time.monotonic()
        timed_out = True
        note = (note + "; " if note else "") + str(exc)
    except MemoryError as exc:
        t_fps = time.monotonic()
        memory = "out_of_memory"
        note = (note + "; " if note else "") + f"compute beside the fill: {exc}"[:120]
    end = time.monotonic()
    peak = torch.cuda.max_memory_allocated() // MIB if is_cuda() else None
    if hold is not None:
        hold.release()
    elapsed = end - start
    reason, measured = judge(elapsed, deadline, challenge.work_flop, claimed, rules, KIND)
    old_rules = dataclasses.replace(rules, gpu_min_efficiency=OLD_FLOOR)
    old_deadline = proof.deadline_s(challenge, claimed, OLD_FLOOR, rules.allowance_s)
    old_reason, _ = judge(elapsed, old_deadline, challenge.work_flop, claimed, old_rules, KIND)
    if fps is None:
        measured = math.nan  # it stopped: there is no throughput to state
    # The server's order: late, then slow, then out of memory.
    verdict = "timeout" if timed_out else (reason.value if reason else "verified")
    old_verdict = "timeout" if timed_out else (old_reason.value if old_reason else "verified")
    if verdict == "verified" and memory != "ok":
        verdict = "out_of_memory"
    if old_verdict == "verified" and memory != "ok":
        old_verdict = "out_of_memory"
    row = {
        "case": case,
        "claim": claim,
        "claimed_tflops": round(claimed, 3),
        "n": challenge.n,
        "rounds": challenge.rounds,
        "work_gflop": round(challenge.work_flop / 1e9, 1),
        "deadline_s": round(deadline, 3),
        "memory_mb": memory_mb,
        "memory": memory,
        "free_beside_fill_mib": free_beside,
        "peak_allocated_mib": peak,
        "fill_s": round(t_fill - start, 4),
        "fingerprints_s": round(t_fps - t_fill, 4),
        "commit_s": round(end - t_fps, 4),
        "prover_s": round(elapsed, 4),
        "measured_tflops": None if math.isnan(measured) else round(measured, 2),
        "percent_of_claim": None if math.isnan(measured) else round(100 * measured / claimed, 1),
        "floor_percent": round(100 * floor, 1),
        "verdict": verdict,
        "verdict_at_old_floor": old_verdict,
        "note": note,
    }
    progress(
        f"{case} ({claim}): {verdict} (at {OLD_FLOOR}: {old_verdict}); fill {row['fill_s']:.3f}"
        f" s for {memory_mb:,} MiB ({memory}), fingerprints {row['fingerprints_s']:.3f} s, "
        f"commit {row['commit_s']:.3f} s: {row['prover_s']:.3f} s for {challenge.rounds} "
        f"rounds, {row['measured_tflops']} TFLOPS of {claimed:.1f} claimed"
    )
    return row, fps, tree


def parse_cheats(text: str) -> list[tuple[str, int]]:
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        key, _, gpus = part.strip().partition(":")
        out.append((key, int(gpus or 1)))
    return out


# -- 4: checks -------------------------------------------------------------------------------


def check(
    challenge: proof.Challenge,
    tree: proof.MerkleTree,
    fps: proof.IntArray,
    repeats: int,
    compare_rounds: int,
) -> dict[str, Any]:
    def opened() -> tuple[list[tuple[int, int]], list[proof.Opening]]:
        checks = proof.select_checks(challenge, os.urandom(32), proof.DEFAULT_CHECKS)
        return checks, [proof.open_check(challenge, tree, fps, r, row) for r, row in checks]

    proof.clear_pool()
    checks, openings = opened()
    t0 = time.perf_counter()
    cold_problem = proof.verify(challenge, tree.root, checks, openings)
    cold_s = time.perf_counter() - t0
    warm, problems = [], [cold_problem]
    for _ in range(repeats):
        checks, openings = opened()
        t0 = time.perf_counter()
        problems.append(proof.verify(challenge, tree.root, checks, openings))
        warm.append(time.perf_counter() - t0)
    progress(f"verify: cold {1000 * cold_s:.0f} ms, warm {1000 * statistics.median(warm):.1f} ms")

    checks = proof.select_checks(challenge, os.urandom(32), proof.DEFAULT_CHECKS)
    forged = fps.copy()
    r, row = checks[0]
    forged[r, row] = (forged[r, row] + 1) % proof.P
    forged_tree = proof.commit(challenge, forged)
    forged_openings = [proof.open_check(challenge, forged_tree, forged, r, i) for r, i in checks]
    forgery = proof.verify(challenge, forged_tree.root, checks, forged_openings)

    rounds = min(compare_rounds, challenge.rounds)
    progress(f"numpy: proving the first {rounds} rounds on the CPU")
    t0 = time.perf_counter()
    by_numpy = NumpyProver().fingerprints(
        proof.Challenge(challenge.seed, challenge.n, rounds), math.inf
    )
    numpy_s = time.perf_counter() - t0
    identical = bool(np.array_equal(by_numpy, fps[:rounds]))
    progress(f"numpy: {numpy_s:.1f} s, identical to CUDA: {identical}")
    return {
        "k": proof.DEFAULT_CHECKS,
        "honest_problems": [p for p in problems if p is not None],
        "verified": all(p is None for p in problems),
        "cold_ms": round(1000 * cold_s, 1),
        "warm_ms": round(1000 * statistics.median(warm), 2) if warm else None,
        "warm_runs": len(warm),
        "forgery_refused": forgery is not None,
        "forgery_reason": forgery,
        "compare_rounds": rounds,
        "numpy_s": round(numpy_s, 2),
        "identical_to_numpy": identical,
    }


# -- 5: memory -------------------------------------------------------------------------------


def probes_agree(seed: bytes, blocks: int, answer: Callable[[int, bytes], str]) -> bool:
    """Whether ``answer(index, nonce)`` gives the server's answer to fresh probes (the
    first and last blocks among them)."""
    indices = [0, blocks - 1] + [
        int.from_bytes(os.urandom(4), "big") % blocks for _ in range(MEMORY_PROBES - 2)
    ]
    for index in indices:
        nonce = os.urandom(16)
        expected = proof.memory_answer(proof.memory_block(seed, index).tobytes(), nonce)
        if answer(index, nonce) != expected:
            return False
    return True


def memory(torch: Any, megabytes: int, server_mb: int) -> dict[str, Any]:
    out: dict[str, Any] = {"server_mb": server_mb, "old_mb": megabytes}
    t0 = time.perf_counter()
    proof.memory_keys(os.urandom(32), 0, proof.memory_blocks(server_mb))
    out["keys_s"] = round(time.perf_counter() - t0, 3)
    for chunk in (32, 256, 0):  # 0: the affine variant, (a·t + b) mod p in one go
        prover = TorchProver([DEVICE])
        prover.fill_chunk_blocks = chunk or 32
        seed = os.urandom(32)
        synchronize(torch)
        if is_cuda():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        if chunk:
            hold = prover.hold_memory(seed, server_mb)
        else:
            segments = fill_affine(prover, seed, server_mb)
            hold = prover._hold([segments])
        synchronize(torch)
        fill_s = time.perf_counter() - t0
        right = probes_agree(seed, proof.memory_blocks(server_mb), hold.answer)
        peak = torch.cuda.max_memory_allocated() // MIB if is_cuda() else None
        if not chunk:
            del segments
        hold.release()
        free = torch.cuda.mem_get_info()[0] // MIB if is_cuda() else None
        name = f"fill_{chunk}" if chunk else "fill_affine"
        out[name] = {
            "s": round(fill_s, 3),
            "gib_per_s": round(server_mb / 1024 / fill_s, 1),
            "probes_right": right,
            "peak_allocated_mib": peak,
            "free_after_release_mib": free,
        }
        progress(
            f"memory: {server_mb:,} MiB generated on the device ({name}) in {fill_s:.3f} s, "
            f"probes right: {right}; {free} MiB free after release"
        )
    old = TorchProver([DEVICE], fast=False)
    seed = os.urandom(32)
    t0 = time.perf_counter()
    hold = old.hold_memory(seed, megabytes)
    synchronize(torch)
    old_s = time.perf_counter() - t0
    right = probes_agree(seed, proof.memory_blocks(megabytes), hold.answer)
    hold.release()
    out["old"] = {
        "s": round(old_s, 3),
        "mib_per_s": round(megabytes / old_s),
        "probes_right": right,
        "server_size_s_scaled": round(old_s * server_mb / megabytes, 1),
    }
    progress(f"memory: numpy's blocks copied, {megabytes} MiB in {old_s:.2f} s")
    return out


# -- 6: other exact paths --------------------------------------------------------------------


def other_paths(torch: Any, n: int) -> dict[str, Any]:
    device = torch.device(DEVICE)
    prover = TorchProver([DEVICE])
    a = prover.matrix(proof.a_key(os.urandom(32), 0), n, device)
    b = prover.matrix(proof.b_key(n, 0), n, device)
    exact = a @ b
    fp32_ms = per_call_ms(torch, lambda: a @ b, 8)
    flop = 2.0 * n**3
    out: dict[str, Any] = {"fp32": {"tflops": round(flop / fp32_ms / 1e9, 1), "exact": True}}

    def measure(name: str, fn: Callable[[], Any]) -> None:
        try:
            got = fn()
            ms = per_call_ms(torch, fn, 8)
            out[name] = {
                "tflops": round(flop / ms / 1e9, 1),
                "exact": bool(torch.equal(got.to(torch.float32), exact)),
            }
        except Exception as exc:  # an API this torch or device lacks
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"}

    if is_cuda():
        torch.backends.cuda.matmul.allow_tf32 = True
        measure("tf32", lambda: a @ b)
        torch.backends.cuda.matmul.allow_tf32 = False
        a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
        measure("bf16_in_fp32_out", lambda: torch.mm(a16, b16, out_dtype=torch.float32))
        measure("bf16_in_bf16_out", lambda: a16 @ b16)
        a8, b8 = a.to(torch.int8), b.to(torch.int8)
        measure("int8_in_int32_out", lambda: torch._int_mm(a8, b8))
        if "error" in out["int8_in_int32_out"]:  # some versions want B column-major
            b8t = b8.t().contiguous().t()
            measure("int8_in_int32_out", lambda: torch._int_mm(a8, b8t))
    progress(f"other exact paths: {out}")
    return out


# -- the report ------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def print_report(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=200)
    d = results["detected"]
    hw = Table(title="Detected (detect_hardware, catalog.classify)", title_justify="left")
    hw.add_column("what")
    hw.add_column("value")
    for gpu in d["gpus"]:
        hw.add_row(f"GPU {gpu['index']} (NVML)", f"{gpu['name']}, {gpu['vram_mb']:,} MiB")
    hw.add_row("driver / CUDA (NVML)", f"{d['driver']} / {d['cuda']}")
    if "torch" in d:
        extra = (
            f": {d['torch_device']}, {d['torch_memory_mib']:,} MiB, "
            f"{d['multiprocessors']} SMs, compute capability {d['capability']}"
            if "torch_device" in d
            else ""
        )
        hw.add_row("torch", f"{d['torch']} (CUDA {d['torch_cuda']}){extra}")
    hw.add_row(
        "classified as",
        f"{d['model']} ({d['model_name']}) × {d['processors']}"
        if d["model"]
        else f"unsupported: {d['reason']}",
    )
    if d["model"]:
        hw.add_row("multiplier", f"{d['multiplier']:g}")
        hw.add_row("claimed FP32", f"{d['claimed_tflops']:g} TFLOPS")
    console.print(hw)

    prof = results.get("profile")
    if prof:
        t = Table(
            title=f"Prover time per round, n = {prof['n']} (CUDA events, {prof['rounds']} "
            "rounds queued back to back), ms",
            title_justify="left",
        )
        for name in ("path", "generate A", "FP32 product", "fingerprints", "whole round"):
            t.add_column(name, justify="left" if name == "path" else "right")
        for path in ("general", "fast"):
            s = prof["split"][path]
            t.add_row(
                path,
                f"{s['generate_a_ms']:.3f}",
                f"{s['product_ms']:.3f}",
                f"{s['fingerprints_ms']:.3f}",
                f"{s['round_ms']:.3f}",
            )
        console.print(t)
        v = prof["variants"]
        console.print(
            f"FP32 product alone: {prof['product_tflops']} TFLOPS. Variants: fingerprints as "
            f"one float64 product {v['fingerprints_one_gemm_ms']:.3f} ms; generation with the "
            f"reduction as a select {v['generate_a_select_ms']:.3f} ms, in 512-row tiles "
            f"{v['generate_a_tiles_ms']:.3f} ms. End to end "
            f"(wall): the old loop {prof['old_loop_ms_per_round']:.3f} ms/round "
            f"({prof['old_loop_tflops']} TFLOPS), fingerprints() now "
            f"{prof['new_loop_ms_per_round']:.3f} ms/round ({prof['new_loop_tflops']} TFLOPS). "
            f"Identical: {prof['identical']}.",
            highlight=False,
        )

    if "proofs" in results:
        w = results.get("warm_up_s")
        proofs = Table(
            title=f"Proofs on {DEVICE} as the agent makes them (fill, compute, commit), judged "
            f"for a GPU; warm-up before the first fetch {_num(w, 3)} s; TF = FP32 TFLOPS",
            title_justify="left",
        )
        for name in (
            "case",
            "claim",
            "claimed TF",
            "rounds",
            "deadline s",
            "memory MiB",
            "fill s",
            "compute s",
            "commit s",
            "total s",
            "measured TF",
            "% of claim",
            "floor",
            "verdict",
            f"at {OLD_FLOOR}",
            "caught",
        ):
            left = name in ("case", "claim", "verdict", f"at {OLD_FLOOR}", "caught")
            proofs.add_column(name, justify="left" if left else "right")
        proofs.add_column("note")
        for p in results["proofs"]:
            proofs.add_row(
                p["case"],
                p["claim"],
                f"{p['claimed_tflops']:.1f}",
                f"{p['rounds']:,}",
                f"{p['deadline_s']:.2f}",
                f"{p['memory_mb']:,}" + ("" if p["memory"] == "ok" else " (OOM)"),
                f"{p['fill_s']:.3f}",
                f"{p['fingerprints_s']:.3f}",
                f"{p['commit_s']:.3f}",
                f"{p['prover_s']:.3f}",
                _num(p["measured_tflops"], 1),
                "—" if p["percent_of_claim"] is None else f"{p['percent_of_claim']:.0f}%",
                f"{p['floor_percent']:.0f}%",
                p["verdict"],
                p["verdict_at_old_floor"],
                {True: "yes", False: "NO"}.get(p.get("caught"), ""),
                p["note"],
            )
        console.print(proofs)

    c = results.get("checks")
    if c:
        forgery = f"refused ({c['forgery_reason']})" if c["forgery_refused"] else "ACCEPTED"
        console.print(
            f"Verifier (proof.verify, k = {c['k']}, on the CPU): cold {c['cold_ms']:,.0f} ms, warm "
            f"{_num(c['warm_ms'])} ms (median of {c['warm_runs']}); honest proof "
            f"{'verified' if c['verified'] else 'REFUSED: ' + '; '.join(c['honest_problems'])}; "
            f"forged row {forgery}. NumpyProver, first {c['compare_rounds']} rounds in "
            f"{c['numpy_s']:.1f} s: "
            f"{'identical to CUDA bit for bit' if c['identical_to_numpy'] else 'DIFFERS'}.",
            highlight=False,
        )
    mem = results.get("memory")
    if mem:
        fills = "; ".join(
            f"{k.removeprefix('fill_')} {v['s']:.3f} s ({v['gib_per_s']} GiB/s, "
            f"probes {'right' if v['probes_right'] else 'WRONG'}, peak "
            f"{_num(v['peak_allocated_mib'], 0)} MiB, free after release "
            f"{_num(v['free_after_release_mib'], 0)} MiB)"
            for k, v in mem.items()
            if k.startswith("fill_")
        )
        o = mem["old"]
        console.print(
            f"Memory, {mem['server_mb']:,} MiB generated on the device: {fills}. Keys alone "
            f"(CPU): {mem['keys_s']:.3f} s. Old path (numpy's blocks copied): {mem['old_mb']:,} "
            f"MiB in {o['s']:.2f} s ({o['mib_per_s']:,} MiB/s, probes "
            f"{'right' if o['probes_right'] else 'WRONG'}), "
            f"{o['server_size_s_scaled']:,.1f} s at the server's size.",
            highlight=False,
        )
    other = results.get("other_paths")
    if other:
        console.print(
            "Other exact paths for A·B (TFLOPS or TOPS; exact = equal to FP32's): "
            + "; ".join(
                f"{k} {v['tflops']} ({'exact' if v['exact'] else 'NOT exact'})"
                if "tflops" in v
                else f"{k}: {v['error']}"
                for k, v in other.items()
            ),
            highlight=False,
        )
    print_footer(console, results)


def print_footer(console: Any, results: dict[str, Any]) -> None:
    m = results["machine"]
    console.print(
        f"Machine: {m['cpus']} CPUs ({m['processor']}), Python {m['python']}, numpy "
        f"{m['numpy']}; peak RSS {results['peak_rss_mb']:,.0f} MB; {results['total_s']:.0f} s "
        f"in all; failures: {', '.join(results['failures']) or 'none'}.",
        highlight=False,
    )


# -- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    global DEVICE, MEMORY_SCALE
    parser = argparse.ArgumentParser(
        description="Prove, profile, verify and judge the proof of compute on a CUDA GPU."
    )
    parser.add_argument(
        "--memory-mb", type=int, default=1024, help="old memory path size timed (0: skip memory)"
    )
    parser.add_argument(
        "--compare-rounds", type=int, default=2, help="rounds NumpyProver recomputes (default 2)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="honest proofs (default 3)")
    parser.add_argument("--verify-repeats", type=int, default=5, help="warm verifies")
    parser.add_argument(
        "--profile-rounds", type=int, default=32, help="rounds per profile figure (0: skip)"
    )
    parser.add_argument(
        "--cheat",
        default=DEFAULT_CHEATS,
        help=f"claims to prove against, KEY or KEY:GPUS, comma-separated ({DEFAULT_CHEATS})",
    )
    parser.add_argument("--model", help="plan for this catalog model when unclassified")
    parser.add_argument("--device", default=DEVICE, help="torch device (cpu: a smoke test)")
    parser.add_argument("--n", type=int, default=0, help="matrix size (0: the server's)")
    parser.add_argument("--target-s", type=float, default=0.0, help="0: the server's")
    parser.add_argument(
        "--memory-scale", type=float, default=1.0, help="scale the memory asks (a smoke test)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--save", metavar="PATH", help="also write the JSON object to PATH")
    args = parser.parse_args(argv)
    DEVICE, MEMORY_SCALE = args.device, args.memory_scale
    catalog = load_catalog()
    try:
        cheats = parse_cheats(args.cheat)
        for key in [k for k, _ in cheats] + ([args.model] if args.model else []):
            float(key[1:]) if key.startswith("x") else catalog.get(key)
    except (KeyError, ValueError) as exc:
        parser.error(f"--cheat: {exc}")
    if args.compare_rounds < 1 or args.repeats < 1 or args.memory_mb < 0:
        parser.error("--compare-rounds and --repeats must be positive, --memory-mb not negative")

    problem = cuda_problem() if is_cuda() else None
    if problem is not None:
        print(f"no CUDA device: {problem}; nothing to measure")
        return 0
    import torch

    hw = detect_hardware()
    cls = catalog.classify(hw)
    if (cls.model is None or not is_cuda()) and args.model:
        progress(f"planning for --model {args.model} ({cls.model or cls.reason} detected)")
        cls = Classification(kind=hw.kind, model=args.model, processors=max(1, len(hw.gpus)))
    claimed = catalog.device_fp32_tflops(cls, hw)
    if cls.model and not is_cuda():
        claimed = catalog.get(cls.model).fp32_tflops
    results: dict[str, Any] = {
        "machine": machine(numpy=np.__version__),
        "detected": detected(hw, cls, claimed),
        "failures": [],
    }
    progress(f"detected {[g.name for g in hw.gpus]}: {cls.model or cls.reason}, {claimed} TFLOPS")
    if claimed <= 0 or cls.model is None:
        results["failures"].append(f"not in the catalog ({cls.reason})")
        finish(results | {"peak_rss_mb": round(peak_rss_mb())}, _T0, args.json, print_report)
        return 2

    rules = ProofRules()
    if args.target_s:
        rules = dataclasses.replace(rules, target_s=args.target_s)
    n = args.n or proof.size_for(KIND)
    results["rules"] = {
        "gpu_min_efficiency": rules.gpu_min_efficiency,
        "allowance_s": rules.allowance_s,
        "target_s": rules.target_s,
        "memory_fraction": MEMORY_FRACTION,
    }
    if args.profile_rounds:
        results["profile"] = guarded(
            results, "profile", lambda: profile(torch, n, args.profile_rounds)
        )
        release(torch)

    model = catalog.get(cls.model)
    claim = f"{cls.model} × {cls.processors}"
    prover = TorchProver([DEVICE])
    t0 = time.perf_counter()
    prover.warm_up(n)
    results["warm_up_s"] = round(time.perf_counter() - t0, 3)
    results["detected"] |= torch_view(torch)
    if is_cuda():
        free, total = torch.cuda.mem_get_info()
        results["detected"]["free_mib_after_warm_up"] = free // MIB
        results["detected"]["total_mib"] = total // MIB
    proofs = []
    fps = tree = challenge = None
    for _ in range(args.repeats):
        planned = proof.plan(os.urandom(32), KIND, claimed, rules.target_s, n=n)
        row, f, t = agent_proof(
            prover, "honest", claim, claimed, memory_ask(model.vram_gb), planned, rules
        )
        proofs.append(row)
        if f is not None and t is not None:
            fps, tree, challenge = f, t, planned
    for key, gpus in cheats:
        if key.startswith("x"):  # this GPU's own claim times a factor, its own memory
            cheat_claimed, vram_gb = claimed * float(key[1:]), model.vram_gb
        else:
            cheat = catalog.get(key)
            cheat_claimed, vram_gb = cheat.fp32_tflops * gpus, cheat.vram_gb
        planned = proof.plan(os.urandom(32), KIND, cheat_claimed, rules.target_s, n=n)
        row, _, _ = agent_proof(
            prover,
            "cheat",
            f"{key} × {gpus}" if not key.startswith("x") else f"{key} this GPU's claim",
            cheat_claimed,
            memory_ask(vram_gb),
            planned,
            rules,
        )
        row["caught"] = row["verdict"] != "verified"
        proofs.append(row)
    results["proofs"] = proofs
    results["cheats_caught"] = sum(p.get("caught", False) for p in proofs)
    honest = [p for p in proofs if p["case"] == "honest"]
    if any(p["verdict"] != "verified" for p in honest):
        results["failures"].append("an honest proof was not verified")
    del prover
    release(torch)

    if fps is None or tree is None or challenge is None:
        results["failures"].append("no honest proof finished")
    else:
        c = guarded(
            results,
            "checks",
            lambda: check(challenge, tree, fps, args.verify_repeats, args.compare_rounds),
        )
        results["checks"] = c
        if c and not c["verified"]:
            results["failures"].append("an honest proof was refused")
        if c and not c["identical_to_numpy"]:
            results["failures"].append("CUDA fingerprints differ from numpy's")
        if c and not c["forgery_refused"]:
            results["failures"].append("a forged fingerprint was accepted")
    if args.memory_mb:
        mem = guarded(
            results,
            "memory",
            lambda: memory(torch, args.memory_mb, memory_ask(model.vram_gb)),
        )
        results["memory"] = mem
        if mem and not all(v["probes_right"] for k, v in mem.items() if isinstance(v, dict)):
            results["failures"].append("a memory probe was answered wrongly")
    results["other_paths"] = guarded(results, "other paths", lambda: other_paths(torch, n))
    results["peak_rss_mb"] = round(peak_rss_mb())
    finish(results, _T0, args.json, print_report)
    if args.save:
        import json

        with open(args.save, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
