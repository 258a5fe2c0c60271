"""What the proof of compute costs the prover and the verifier, and how often it catches a
cheater, measured on this machine.

Run it as::

    .venv/bin/python benchmarks/proof.py [--sizes 512,1024] [--trials 2000]
                                         [--skip-gpu-size] [--json]

It prints four kinds of figure (``idlegrid/core/proof.py`` has the protocol):

1. **Prover time per challenge, for the CPU sizes** (n = 512 and 1024 by default; 1024 is
   what the server gives a CPU). Each challenge is planned as the server plans one for
   this machine: ``proof.plan(seed, kind, claimed, target_s, n=n)`` with the claimed
   throughput ``catalog.device_fp32_tflops(catalog.classify(detect_hardware()), ...)``
   and ``target_s`` = ``ProofRules().target_s`` (1 s). The prover time is
   ``NumpyProver.fingerprints`` + ``proof.commit``, with the public B pool already generated
   (a worker keeps it between challenges; its one-off generation time is shown beside
   the verifier). The measured throughput is ``work_flop`` / prover time, and the
   server's timing verdict is ``proof_policy.judge`` under the default ``ProofRules``
   (the floor of this machine's kind: ``min_efficiency`` for a CPU).
   For n = 1024, ``TorchProver(["cpu"])`` proves the same challenge as an extra row (one
   untimed warm-up run first, which builds its B pool), and its fingerprints are
   compared with numpy's.

2. **Verifier time per challenge**, for k = ``DEFAULT_CHECKS`` checks: ``proof.verify`` on
   openings from ``proof.open_check`` (checks from ``proof.select_checks`` with fresh
   ``os.urandom`` entropy; drawing the checks and building the openings is not timed).
   *Cold* is the first verify after ``clear_pool()``: it regenerates the
   public Bs the checks touch. *Warm* repeats it (``--repeats``, fresh checks each time)
   with the pool cached, as a long-running verifier runs (the median wall time and the
   mean CPU time are shown). Wall time is taken with OpenBLAS's default thread count;
   the verifier's **CPU time per challenge** (``time.process_time``) is taken with
   OpenBLAS limited to one thread (set through ctypes, the way threadpoolctl does it), so
   that it is the cost to one core, and 3600 s / that is the number of devices one core
   can verify per hour, against the goal of 100,000. (Where the thread count cannot be
   set, the CPU time is with the default threads, and the report says so.) The pool's
   memory, ``POOL_SIZE`` × n² × 4 bytes, is shown per size.

   The GPU size, n = size_for("gpu") (skip it with ``--skip-gpu-size``), is verified twice:

   - a one-round challenge that ``NumpyProver`` proves in full once (its prover time is
     in the prover table): all k checks fall in one round, so the verifier does one
     (k × n) · (n × n) product, its best case;
   - a challenge planned as the server plans one for a GPU of the catalog
     (``--gpu-model``, H100 SXM by default: about 60 rounds). Proving it on a CPU would
     take minutes, so only the leaves that the drawn checks open are computed, with the
     prover's own arithmetic (``proof.block``, ``pool_matrix``, ``proof.fingerprints``); every
     other leaf is committed as zeros. The openings are genuine (``verify`` accepts
     them), and the verifier's work is exactly what an honest full proof would cost it,
     since it only ever looks at the opened leaves. Its checks are spread over many
     rounds, which is the real GPU workload. Its cold figure is not measured (it would
     regenerate all four 256 MiB Bs a second time); the pool's generation time is
     shown instead;
   - eight such planned challenges verified together by ``proof.verify_many``, as
     the server verifies reveals that arrive together (``server/group_verify.py``):
     CPU per challenge is the batch's CPU over eight.

3. **Measured detection rate** over ``--trials`` simulated challenges (2,000 by default)
   for cheaters that compute a fraction f ∈ {0.5, 0.9, 0.99} of the rows (and an honest
   control, f = 1), beside the bound 1 − ``pass_probability(f, k)``. The challenge is
   small (n = 128, 25 rounds: 3,200 rows, so that f × rows is a whole number for every
   f). The honest fingerprints are computed once per f; every trial then draws a fresh
   set of computed rows (exactly round(f × rows) of them, uniformly at random; with
   ``--bernoulli``, each row independently with probability f instead), gives every
   other row a uniformly random fake fingerprint in [0, p), builds a fresh Merkle tree
   over that table (``proof.commit``: no tree is reused), draws fresh checks
   (``proof.select_checks`` with ``os.urandom(32)``), opens them and runs the real
   ``proof.verify``. A trial is a detection when ``verify`` returns a reason. Exact
   fractions are the default because the bound is about a prover that computed a
   fraction f: with independent rows the computed fraction varies from trial to trial,
   and as x ↦ x^k is convex, the pass rate is then a little above f^k.

4. A summary: ``checks_needed(0.9, 0.99)``, and PASS/FAIL for the goal that the default
   k catches a prover skipping 10% of the rows in at least 99% of challenges (the bound
   must reach 99%, and the measured rate must agree with the bound: the chance of seeing
   at least as many passing cheaters as were seen, if each passes with probability
   ``pass_probability``, must be at least 0.1%).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import finish

from idlegrid.catalog import load_catalog
from idlegrid.core import proof
from idlegrid.core.proof_policy import ProofRules, judge
from idlegrid.worker.hardware import detect_hardware
from idlegrid.worker.prover import NumpyProver, TorchProver

GOAL_DEVICES_PER_HOUR = 100_000  # verified per core per hour
GOAL_SKIP = 0.9  # a prover computing 90% of the rows ...
GOAL_DETECTION = 0.99  # ... is caught in at least 99% of challenges
CONSISTENCY_P = 0.001
BATCH = 8  # challenges verified together in the batched row (server/group_verify.py)
GPU_SIZE = proof.size_for("gpu")
SIM_N = 128
SIM_ROUNDS = 25
MIB = 1024 * 1024

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- BLAS threads ----------------------------------------------------------------------------


def _openblas_controls() -> list[tuple[Callable[[], int], Callable[[int], None]]]:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (Linux)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    paths = sorted(
        {
            line.split()[-1]
            for line in maps.read_text().splitlines()
            if "openblas" in line.lower() and line.split()[-1].startswith("/")
        }
    )
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", "_64_", ""):
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if getter is not None and setter is not None:
                    getter.restype = ctypes.c_int
                    setter.argtypes = [ctypes.c_int]
                    setter.restype = None
                    controls.append((getter, setter))
                    break
            else:
                continue
            break
    return controls


_BLAS = _openblas_controls()


def blas_threads_now() -> int | None:
    return int(_BLAS[0][0]()) if _BLAS else None


@contextlib.contextmanager
def blas_threads(count: int) -> Iterator[bool]:
    """OpenBLAS limited to ``count`` threads inside; yields whether that could be done."""
    if not _BLAS:
        yield False
        return
    saved = [get() for get, _ in _BLAS]
    for _, set_ in _BLAS:
        set_(count)
    try:
        yield True
    finally:
        for (_, set_), value in zip(_BLAS, saved, strict=True):
            set_(value)


# -- helpers -------------------------------------------------------------------------------


def pool_mib(n: int) -> float:
    return proof.POOL_SIZE * n * n * 4 / MIB


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def opened(
    challenge: proof.Challenge, tree: proof.MerkleTree, fps: proof.IntArray, k: int
) -> tuple[list[tuple[int, int]], list[proof.Opening]]:
    """Fresh checks, and the prover's openings of them."""
    checks = proof.select_checks(challenge, os.urandom(32), k)
    return checks, [proof.open_check(challenge, tree, fps, r, row) for r, row in checks]


def generate_pool(n: int, indices: Sequence[int]) -> float:
    """Seconds to generate (and cache) the public Bs ``indices`` of size n."""
    started = time.perf_counter()
    for index in indices:
        proof.pool_matrix(n, index)
    return time.perf_counter() - started


Instance = tuple[list[tuple[int, int]], list[proof.Opening]]


def time_verify(
    challenge: proof.Challenge,
    root: bytes,
    instances: Sequence[Instance],
    repeats: int,
    budget_s: float,
) -> dict[str, Any]:
    """Warm ``proof.verify`` over ``instances`` (cycled), with default and with one BLAS
    thread: at least 3 runs each, at most ``repeats``, stopping after ``budget_s``."""

    def runs() -> tuple[list[float], list[float]]:
        walls, cpus = [], []
        started = time.perf_counter()
        for i in range(repeats):
            checks, openings = instances[i % len(instances)]
            t0, c0 = time.perf_counter(), time.process_time()
            problem = proof.verify(challenge, root, checks, openings)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            if problem is not None:
                raise AssertionError(f"an honest proof failed to verify: {problem}")
            if i >= 2 and time.perf_counter() - started > budget_s:
                break
        return walls, cpus

    walls, cpus_default = runs()
    with blas_threads(1) as limited:
        walls_one, cpus_one = runs()
    cpu_s = statistics.mean(cpus_one)
    return {
        "runs": len(walls),
        "warm_ms": round(1000 * statistics.median(walls), 3),
        "warm_ms_mean": round(1000 * statistics.mean(walls), 3),
        "warm_cpu_ms_default_threads": round(1000 * statistics.mean(cpus_default), 3),
        "warm_ms_one_thread": round(1000 * statistics.median(walls_one), 3),
        "cpu_ms": round(1000 * cpu_s, 3),
        "cpu_ms_one_thread": limited,
        "devices_per_hour_per_core": round(3600 / cpu_s) if cpu_s > 0 else None,
        "meets_goal": bool(cpu_s > 0 and 3600 / cpu_s >= GOAL_DEVICES_PER_HOUR),
    }


def cold_verify(challenge: proof.Challenge, root: bytes, instance: Instance) -> dict[str, float]:
    """The first verify with an empty pool cache (it regenerates the Bs it needs)."""
    proof.clear_pool()
    checks, openings = instance
    t0, c0 = time.perf_counter(), time.process_time()
    problem = proof.verify(challenge, root, checks, openings)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if problem is not None:
        raise AssertionError(f"an honest proof failed to verify: {problem}")
    used = len({proof.pool_index(challenge.seed, r) for r, _ in checks})
    return {"cold_ms": round(1000 * wall, 2), "cold_cpu_ms": round(1000 * cpu, 2), "cold_bs": used}


def prover_row(
    name: str,
    challenge: proof.Challenge,
    fingerprint_s: float,
    commit_s: float,
    claimed: float,
    rules: ProofRules,
    note: str,
    kind: str,
) -> dict[str, Any]:
    total = fingerprint_s + commit_s
    floor = rules.efficiency_floor(kind)
    deadline = proof.deadline_s(challenge, claimed, floor, rules.allowance_s)
    reason, measured = judge(total, deadline, challenge.work_flop, claimed, rules, kind)
    return {
        "prover": name,
        "n": challenge.n,
        "rounds": challenge.rounds,
        "work_gflop": round(challenge.work_flop / 1e9, 2),
        "claimed_tflops": claimed,
        "fingerprints_s": round(fingerprint_s, 4),
        "commit_s": round(commit_s, 4),
        "prover_s": round(total, 4),
        "measured_tflops": round(measured, 4),
        "percent_of_claim": round(100 * measured / claimed, 1) if claimed else None,
        "deadline_s": round(deadline, 2),
        "verdict": reason.value if reason else "verified",
        "note": note,
    }


# -- 1 and 2: the CPU sizes ------------------------------------------------------------------


def bench_cpu_size(
    n: int, kind: str, claimed: float, rules: ProofRules, k: int, repeats: int, torch: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    challenge = proof.plan(os.urandom(32), kind, claimed, rules.target_s, n=n)
    progress(
        f"n={n}: {challenge.rounds} rounds ({challenge.work_flop / 1e9:.1f} GFLOP) planned "
        f"for {claimed:.3f} TFLOPS in {rules.target_s:g} s"
    )
    proof.clear_pool()
    pool_s = generate_pool(n, range(proof.POOL_SIZE))
    prover = NumpyProver()
    prover.fingerprints(proof.Challenge(challenge.seed, n, 1), math.inf)  # warm BLAS up
    # The baseline, interleaved with the prover: plain float32 a @ b of the same size
    # for the same rounds (the machine's matrix throughput; no generation, no hashing).
    a = np.random.default_rng(0).integers(-2, 3, size=(n, n)).astype(np.float32)
    bs = [proof.pool_matrix(n, proof.pool_index(challenge.seed, r)) for r in range(4)]
    proves, plains = [], []
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        fps = prover.fingerprints(challenge, math.inf)
        t1 = time.perf_counter()
        tree = proof.commit(challenge, fps)
        t2 = time.perf_counter()
        proves.append((t1 - t0, t2 - t1))
        t3 = time.perf_counter()
        for r in range(challenge.rounds):
            a @ bs[r % len(bs)]
        plains.append(time.perf_counter() - t3)
    fp_s, commit_s = sorted(proves, key=sum)[len(proves) // 2]
    rows = [prover_row("numpy", challenge, fp_s, commit_s, claimed, rules, "", kind)]
    ratios = sorted(p / sum(q) for p, q in zip(plains, proves, strict=True))
    plain_s = sorted(plains)[len(plains) // 2]
    rows[0]["baseline"] = {
        "matmul_s": round(plain_s, 4),
        "matmul_tflops": round(challenge.work_flop / plain_s / 1e12, 4),
        "matmul_s_range": [round(min(plains), 4), round(max(plains), 4)],
        "prover_s_range": [round(min(map(sum, proves)), 4), round(max(map(sum, proves)), 4)],
        "ratio": round(ratios[len(ratios) // 2], 3),
        "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
        "runs": len(proves),
    }
    progress(
        f"  numpy prover {fp_s + commit_s:.2f} s "
        f"({challenge.work_flop / (fp_s + commit_s) / 1e12:.3f} TFLOPS); plain a @ b "
        f"{plain_s:.2f} s: {rows[0]['baseline']['ratio']:.2f} of it"
    )

    if torch:
        progress("  torch-cpu prover: warm-up run, then the timed run")
        tp = TorchProver(["cpu"])
        tp.fingerprints(challenge, math.inf)
        t0 = time.perf_counter()
        tfps = tp.fingerprints(challenge, math.inf)
        t1 = time.perf_counter()
        ttree = proof.commit(challenge, tfps)
        t2 = time.perf_counter()
        same = bool(np.array_equal(tfps, fps) and ttree.root == tree.root)
        threads = tp.torch.get_num_threads()
        rows.append(
            prover_row(
                tp.name,
                challenge,
                t1 - t0,
                t2 - t1,
                claimed,
                rules,
                f"{threads} threads; " + ("= numpy's" if same else "DIFFERS from numpy's"),
                kind,
            )
        )
        rows[-1]["identical_to_numpy"] = same
        progress(f"  torch-cpu prover {t2 - t0:.2f} s, identical to numpy: {same}")

    instances = [opened(challenge, tree, fps, k) for _ in range(max(1, repeats))]
    cold = cold_verify(challenge, tree.root, instances[0])
    warm = time_verify(challenge, tree.root, instances, repeats, budget_s=5.0)
    verifier = {
        "n": n,
        "label": f"{n}, planned for this CPU ({challenge.rounds} rounds)",
        "rounds": challenge.rounds,
        "k": k,
        "pool_generation_s": round(pool_s, 3),
        "pool_mib": pool_mib(n),
        **cold,
        **warm,
    }
    progress(
        f"  verify: cold {cold['cold_ms']:.1f} ms, warm {warm['warm_ms']:.2f} ms, "
        f"{warm['cpu_ms']:.2f} CPU ms -> {warm['devices_per_hour_per_core']:,} devices/h/core"
    )
    return rows, verifier


# -- 2: the GPU size -------------------------------------------------------------------------


def partial_table(challenge: proof.Challenge, check_sets: Sequence[list[tuple[int, int]]]) -> Any:
    """Fingerprints of just the leaves the checks open (the prover's arithmetic); zeros
    elsewhere. Returns the table and the number of rows computed."""
    n = challenge.n
    w = proof.weights(challenge.seed, n)
    fps = np.zeros((challenge.rounds, n), dtype=np.int64)
    leaves: dict[int, set[int]] = {}
    for checks in check_sets:
        for r, row in checks:
            leaves.setdefault(r, set()).add(row // proof.LEAF_ROWS)
    computed = 0
    for r, wanted in sorted(leaves.items()):
        rows = np.concatenate(
            [np.arange(j * proof.LEAF_ROWS, (j + 1) * proof.LEAF_ROWS) for j in sorted(wanted)]
        ).astype(np.int64)
        a = proof.block(proof.a_key(challenge.seed, r), rows, n).astype(np.float32)
        b = proof.pool_matrix(n, proof.pool_index(challenge.seed, r))
        fps[r, rows] = proof.fingerprints(a @ b, w)
        computed += len(rows)
    return fps, computed


def bench_gpu_size(
    gpu_model: str, rules: ProofRules, k: int, repeats: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    n = GPU_SIZE
    catalog = load_catalog()
    model = catalog.get(gpu_model)
    claimed_gpu = model.fp32_tflops
    proof.clear_pool()

    # (a) one round, proved in full.
    one = proof.Challenge(os.urandom(32), n, 1)
    first = proof.pool_index(one.seed, 0)
    progress(f"n={n}: generating public B #{first} ({n * n * 4 / MIB:.0f} MiB)")
    gen_first_s = generate_pool(n, [first])
    progress(f"  {gen_first_s:.1f} s; proving one round with NumpyProver")
    t0 = time.perf_counter()
    fps = NumpyProver().fingerprints(one, math.inf)
    t1 = time.perf_counter()
    tree = proof.commit(one, fps)
    t2 = time.perf_counter()
    one_prover = prover_row(
        "numpy",
        one,
        t1 - t0,
        t2 - t1,
        claimed_gpu,
        rules,
        f"judged vs {gpu_model}",
        "gpu",
    )
    progress(f"  proved in {t2 - t0:.1f} s; verifying (cold: regenerates the B)")
    instances = [opened(one, tree, fps, k) for _ in range(max(1, repeats))]
    cold = cold_verify(one, tree.root, instances[0])
    warm = time_verify(one, tree.root, instances, repeats, budget_s=5.0)
    one_verifier = {
        "n": n,
        "label": f"{n}, 1 round, proved in full",
        "rounds": 1,
        "k": k,
        "pool_generation_s": None,
        "pool_mib": pool_mib(n),
        **cold,
        **warm,
    }
    progress(f"  verify: cold {cold['cold_ms']:.0f} ms, warm {warm['warm_ms']:.1f} ms")

    # (b) planned for a GPU; only the opened leaves computed.
    others = [i for i in range(proof.POOL_SIZE) if i != first]
    progress(f"  generating the other {len(others)} public Bs")
    gen_rest_s = generate_pool(n, others)
    pool_s = gen_first_s + gen_rest_s
    planned = proof.plan(os.urandom(32), "gpu", claimed_gpu, rules.target_s)
    sets = max(1, min(repeats, 3))
    check_sets = [proof.select_checks(planned, os.urandom(32), k) for _ in range(sets)]
    progress(
        f"  {planned.rounds} rounds planned for {gpu_model} ({claimed_gpu} TFLOPS); computing "
        f"the leaves that {sets} sets of {k} checks open"
    )
    t0 = time.perf_counter()
    table, computed = partial_table(planned, check_sets)
    ptree = proof.commit(planned, table)
    openings_s = time.perf_counter() - t0
    instances = [
        (checks, [proof.open_check(planned, ptree, table, r, row) for r, row in checks])
        for checks in check_sets
    ]
    warm = time_verify(planned, ptree.root, instances, repeats, budget_s=10.0)
    rounds_touched = statistics.mean(len({r for r, _ in c}) for c in check_sets)
    planned_verifier = {
        "n": n,
        "label": f"{n}, planned for {gpu_model} ({planned.rounds} rounds)",
        "rounds": planned.rounds,
        "k": k,
        "pool_generation_s": round(pool_s, 2),
        "pool_mib": pool_mib(n),
        "cold_ms": None,
        "cold_cpu_ms": None,
        "cold_bs": None,
        "rounds_checked_mean": round(rounds_touched, 1),
        "openings_rows_computed": computed,
        "openings_s": round(openings_s, 2),
        **warm,
    }
    progress(
        f"  verify: warm {warm['warm_ms']:.1f} ms, {warm['cpu_ms']:.1f} CPU ms "
        f"-> {warm['devices_per_hour_per_core']:,} devices/h/core"
    )
    batched = time_verify_batch(planned_batch(claimed_gpu, rules, k, BATCH), BATCH, repeats)
    batched_verifier = {
        **{key: planned_verifier[key] for key in ("n", "rounds", "k", "pool_mib")},
        "label": f"{n}, planned, {BATCH} at a time (proof.verify_many)",
        "pool_generation_s": None,
        "cold_ms": None,
        "cold_cpu_ms": None,
        "cold_bs": None,
        **batched,
    }
    progress(
        f"  verify_many of {BATCH}: {batched['cpu_ms']:.1f} CPU ms a challenge "
        f"-> {batched['devices_per_hour_per_core']:,} devices/h/core"
    )
    gpu = {
        "model": gpu_model,
        "claimed_tflops": claimed_gpu,
        "pool_generation_s": round(pool_s, 2),
        "pool_generation_s_per_matrix": round(pool_s / proof.POOL_SIZE, 2),
        "peak_rss_mib": round(peak_rss_mib()),
        "prover": one_prover,
    }
    proof.clear_pool()  # give the memory back
    return gpu, [one_verifier, planned_verifier, batched_verifier]


def planned_batch(claimed: float, rules: ProofRules, k: int, count: int) -> list[proof.Claim]:
    """``count`` GPU challenges as the server plans them, each with honest openings of
    fresh checks (only the opened leaves computed, as for the planned row)."""
    claims: list[proof.Claim] = []
    for _ in range(count):
        challenge = proof.plan(os.urandom(32), "gpu", claimed, rules.target_s)
        checks = proof.select_checks(challenge, os.urandom(32), k)
        table, _ = partial_table(challenge, [checks])
        tree = proof.commit(challenge, table)
        openings = [proof.open_check(challenge, tree, table, r, row) for r, row in checks]
        claims.append((challenge, tree.root, checks, openings))
    return claims


def time_verify_batch(claims: list[proof.Claim], count: int, repeats: int) -> dict[str, Any]:
    """``proof.verify_many`` over the batch, per challenge: wall with the default BLAS
    threads, CPU with one (as ``time_verify``)."""

    def runs() -> tuple[list[float], list[float]]:
        walls, cpus = [], []
        for _ in range(max(3, repeats)):
            t0, c0 = time.perf_counter(), time.process_time()
            problems = proof.verify_many(claims)
            walls.append((time.perf_counter() - t0) / count)
            cpus.append((time.process_time() - c0) / count)
            if any(p is not None for p in problems):
                raise AssertionError(f"an honest proof failed to verify: {problems}")
        return walls, cpus

    walls, _ = runs()
    with blas_threads(1) as limited:
        _, cpus_one = runs()
    cpu_s = statistics.mean(cpus_one)
    return {
        "runs": len(walls),
        "warm_ms": round(1000 * statistics.median(walls), 3),
        "cpu_ms": round(1000 * cpu_s, 3),
        "cpu_ms_one_thread": limited,
        "devices_per_hour_per_core": round(3600 / cpu_s) if cpu_s > 0 else None,
        "meets_goal": bool(cpu_s > 0 and 3600 / cpu_s >= GOAL_DEVICES_PER_HOUR),
    }


# -- 3: detection ----------------------------------------------------------------------------


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    if trials == 0:
        return math.nan, math.nan
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def upper_tail(observed: int, trials: int, q: float) -> float:
    """P[Binomial(trials, q) ≥ observed]."""
    if observed <= 0:
        return 1.0
    if q <= 0:
        return 0.0
    if q >= 1:
        return 1.0
    log_q, log_1q = math.log(q), math.log1p(-q)
    total = 0.0
    for i in range(observed, trials + 1):
        total += math.exp(
            math.lgamma(trials + 1)
            - math.lgamma(i + 1)
            - math.lgamma(trials - i + 1)
            + i * log_q
            + (trials - i) * log_1q
        )
    return min(1.0, total)


def bench_detection(
    fractions: Sequence[float], trials: int, k: int, n: int, rounds: int, bernoulli: bool
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(int.from_bytes(os.urandom(16), "big"))
    out = []
    for f in [*fractions, 1.0]:
        challenge = proof.Challenge(os.urandom(32), n, rounds)
        _, honest = proof.prove(challenge)  # once per f
        flat = honest.reshape(-1)
        total = flat.size
        keep = round(f * total)
        label = "honest control" if f == 1.0 else f"f = {f:g}"
        progress(f"detection, {label}: {trials:,} challenges of {rounds} × {n}")
        started = time.perf_counter()
        detected = 0
        computed_sum = 0
        for _ in range(trials):
            if bernoulli:
                mask = rng.random(total) < f
            else:
                mask = np.zeros(total, dtype=bool)
                mask[rng.choice(total, size=keep, replace=False)] = True
            computed_sum += int(mask.sum())
            fake = rng.integers(0, proof.P, size=total, dtype=np.int64)
            table = np.where(mask, flat, fake).reshape(rounds, n)
            tree = proof.commit(challenge, table)
            checks, openings = opened(challenge, tree, table, k)
            if proof.verify(challenge, tree.root, checks, openings) is not None:
                detected += 1
        seconds = time.perf_counter() - started
        passed = trials - detected
        q = proof.pass_probability(f, k)
        low, high = wilson(detected, trials)
        tail = upper_tail(passed, trials, q)
        row: dict[str, Any] = {
            "f": f,
            "rows": total,
            "rows_computed_mean": round(computed_sum / trials, 1),
            "trials": trials,
            "detected": detected,
            "measured": detected / trials,
            "ci95": [round(low, 5), round(high, 5)],
            "bound": 1 - q,
            "p_at_least_this_many_passes": tail,
            # The honest prover must never be caught; a cheater must not pass more often
            # than the bound allows.
            "consistent": detected == 0 if f == 1.0 else tail >= CONSISTENCY_P,
            "seconds": round(seconds, 2),
            "ms_per_trial": round(1000 * seconds / trials, 3),
        }
        progress(
            f"  caught {detected:,}/{trials:,} = {100 * row['measured']:.2f}% "
            f"(bound {100 * row['bound']:.2f}%), {row['ms_per_trial']:.2f} ms per challenge"
        )
        out.append(row)
    return out


def goal_line(detection: list[dict[str, Any]], k: int) -> dict[str, Any]:
    needed = proof.checks_needed(GOAL_SKIP, GOAL_DETECTION)
    bound = 1 - proof.pass_probability(GOAL_SKIP, k)
    row = next((r for r in detection if math.isclose(r["f"], GOAL_SKIP)), None)
    consistent = row["consistent"] if row else None
    ok = bound >= GOAL_DETECTION and needed <= k and consistent is not False
    return {
        "f": GOAL_SKIP,
        "goal_detection": GOAL_DETECTION,
        "k": k,
        "checks_needed": needed,
        "bound": bound,
        "measured": row["measured"] if row else None,
        "ci95": row["ci95"] if row else None,
        "measured_consistent_with_bound": consistent,
        "point_estimate_meets_goal": (row["measured"] >= GOAL_DETECTION) if row else None,
        "verdict": "PASS" if ok else "FAIL",
    }


# -- the report ------------------------------------------------------------------------------


def _ms(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def print_report(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    m = results["machine"]

    prover = Table(
        title="Prover, per challenge (B pool warm): fingerprints + commit", title_justify="left"
    )
    for name in (
        "n",
        "prover",
        "rounds",
        "GFLOP",
        "claimed TFLOPS",
        "fingerprints s",
        "commit s",
        "prover s",
        "measured TFLOPS",
        "% of claim",
        "deadline s",
        "verdict",
    ):
        prover.add_column(name, justify="left" if name in ("prover", "verdict") else "right")
    prover.add_column("note")
    rows = list(results["provers"])
    if results.get("gpu"):
        rows.append(results["gpu"]["prover"])
    for r in rows:
        prover.add_row(
            str(r["n"]),
            r["prover"],
            f"{r['rounds']:,}",
            f"{r['work_gflop']:,.1f}",
            f"{r['claimed_tflops']:.3f}",
            f"{r['fingerprints_s']:.3f}",
            f"{r['commit_s']:.4f}",
            f"{r['prover_s']:.3f}",
            f"{r['measured_tflops']:.4f}",
            f"{r['percent_of_claim']:.0f}%",
            f"{r['deadline_s']:.1f}",
            r["verdict"],
            r["note"],
        )
    console.print(prover)
    for r in results["provers"]:
        base = r.get("baseline")
        if base:
            console.print(
                f"n={r['n']}: plain float32 a @ b for the same {r['rounds']} rounds (the "
                f"machine's matrix throughput) {base['matmul_s']:.3f} s "
                f"({base['matmul_s_range'][0]:.3f}–{base['matmul_s_range'][1]:.3f}), "
                f"{base['matmul_tflops']:.3f} TFLOPS; the numpy prover "
                f"({r['prover_s']:.3f} s) runs at {base['ratio']:.2f} of it "
                f"({base['ratio_range'][0]:.2f}–{base['ratio_range'][1]:.2f} over "
                f"{base['runs']} runs; goal ≥ 0.85)"
            )

    one_thread = all(v["cpu_ms_one_thread"] for v in results["verifiers"])
    verifier = Table(
        title=f"Verifier, per challenge: proof.verify of k = {results['k']} openings "
        f"(wall with {m['blas_threads']} BLAS threads; CPU with "
        f"{'1 BLAS thread' if one_thread else 'default BLAS threads'})",
        title_justify="left",
    )
    for name in (
        "challenge",
        "B pool MiB",
        "pool gen s",
        "cold ms",
        "warm ms",
        "runs",
        "CPU ms",
        "devices/h/core",
        f"≥ {GOAL_DEVICES_PER_HOUR:,}/h",
    ):
        verifier.add_column(name, justify="left" if name == "challenge" else "right")
    for v in results["verifiers"]:
        verifier.add_row(
            v["label"],
            f"{v['pool_mib']:,.0f}",
            _ms(v["pool_generation_s"], 2),
            _ms(v["cold_ms"], 1),
            _ms(v["warm_ms"], 2),
            str(v["runs"]),
            _ms(v["cpu_ms"], 2),
            f"{v['devices_per_hour_per_core']:,}",
            "PASS" if v["meets_goal"] else "FAIL",
        )
    console.print(verifier)
    if results.get("gpu"):
        g = results["gpu"]
        planned = next(v for v in results["verifiers"] if "openings_rows_computed" in v)
        console.print(
            f"GPU size: the {GPU_SIZE} pool ({pool_mib(GPU_SIZE):,.0f} MiB) took "
            f"{g['pool_generation_s']:.1f} s to generate ({g['pool_generation_s_per_matrix']:.1f}"
            f" s a matrix; process peak RSS {g['peak_rss_mib']:,} MiB). The planned "
            f"challenge's openings came from {planned['openings_rows_computed']:,} rows computed "
            f"in {planned['openings_s']:.1f} s; its checks touched "
            f"{planned['rounds_checked_mean']:.1f} rounds on average.",
            highlight=False,
        )
    sizes = sorted({1024, 2048, GPU_SIZE} | {v["n"] for v in results["verifiers"]})
    console.print(
        "Verifier pool memory, POOL_SIZE × n² × 4 bytes: "
        + ", ".join(f"n={n}: {pool_mib(n):,.0f} MiB" for n in sizes)
        + f" (the verifier keeps the pools of three sizes, {3 * proof.POOL_SIZE} matrices).",
        highlight=False,
    )

    det = Table(
        title=f"Detection over simulated challenges (n = {results['sim']['n']}, "
        f"{results['sim']['rounds']} rounds, k = {results['k']}, "
        + (
            "each row computed with probability f)"
            if results["sim"]["bernoulli"]
            else "exactly f of the rows computed)"
        ),
        title_justify="left",
    )
    for name in (
        "cheater",
        "rows computed",
        "challenges",
        "caught",
        "measured",
        "95% CI",
        "bound 1 − pass_probability",
        "P[≥ passes seen]",
        "agrees",
        "ms each",
    ):
        det.add_column(name, justify="left" if name == "cheater" else "right")
    for r in results["detection"]:
        det.add_row(
            "honest (f = 1)" if r["f"] == 1.0 else f"f = {r['f']:g}",
            f"{r['rows_computed_mean']:,.1f}/{r['rows']:,}",
            f"{r['trials']:,}",
            f"{r['detected']:,}",
            f"{100 * r['measured']:.2f}%",
            f"{100 * r['ci95'][0]:.2f}–{100 * r['ci95'][1]:.2f}%",
            f"{100 * r['bound']:.4f}%",
            f"{r['p_at_least_this_many_passes']:.3g}",
            "yes" if r["consistent"] else "NO",
            f"{r['ms_per_trial']:.2f}",
        )
    console.print(det)

    g = results["goal"]
    measured = (
        f"measured {100 * g['measured']:.2f}% (95% CI {100 * g['ci95'][0]:.2f}–"
        f"{100 * g['ci95'][1]:.2f}%), "
        + ("consistent with the bound" if g["measured_consistent_with_bound"] else "NOT consistent")
        + (
            ""
            if g["point_estimate_meets_goal"]
            else "; the point estimate is below 99% (sampling noise, by the test above)"
        )
        if g["measured"] is not None
        else "not simulated"
    )
    console.print(
        f"checks_needed({GOAL_SKIP}, {GOAL_DETECTION}) = {g['checks_needed']}; DEFAULT_CHECKS = "
        f"{proof.DEFAULT_CHECKS}. Goal, a prover skipping 10% of the rows caught in ≥ 99% of "
        f"challenges with k = {g['k']}: [bold]{g['verdict']}[/bold] (bound "
        f"{100 * g['bound']:.2f}%; {measured}).",
        highlight=False,
    )
    cpu_rows = results["verifiers"][: len(results["sizes"])]
    if cpu_rows:
        cpu = next((v for v in cpu_rows if v["n"] == proof.size_for("cpu")), cpu_rows[-1])
        line = (
            f"Goal, ≥ {GOAL_DEVICES_PER_HOUR:,} devices verified per core per hour: at n = "
            f"{cpu['n']} (CPU) {cpu['devices_per_hour_per_core']:,}/h: "
            f"[bold]{'PASS' if cpu['meets_goal'] else 'FAIL'}[/bold]"
        )
        if results.get("gpu"):
            alone = next(v for v in results["verifiers"] if "openings_rows_computed" in v)
            gpu = results["verifiers"][-1]
            line += (
                f"; at n = {GPU_SIZE} (GPU, planned) one at a time "
                f"{alone['devices_per_hour_per_core']:,}/h, in batches of {BATCH} (as the "
                f"server verifies reveals that arrive together) "
                f"{gpu['devices_per_hour_per_core']:,}/h: "
                f"[bold]{'PASS' if gpu['meets_goal'] else 'FAIL'}[/bold]"
            )
        console.print(line + ".", highlight=False)
    console.print(
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), catalog model {m['catalog_model']} "
        f"claiming {m['claimed_tflops']:.3f} TFLOPS; numpy {m['numpy']} "
        f"({m['blas_threads']} OpenBLAS threads), torch {m['torch'] or 'absent'}; Python "
        f"{m['python']}; {results['total_s']:.0f} s in all.",
        highlight=False,
    )


def parse_list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not values:
            raise argparse.ArgumentTypeError("give at least one value")
        return values

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure the proof of compute's prover and verifier costs and its "
        "detection rate on this machine."
    )
    parser.add_argument(
        "--sizes",
        type=parse_list(int),
        default=[512, 1024],
        help="CPU matrix sizes n (default 512,1024; multiples of 64 up to 8192)",
    )
    parser.add_argument("--skip-gpu-size", action="store_true", help=f"skip n = {GPU_SIZE}")
    parser.add_argument(
        "--gpu-model", default="h100-sxm-80gb", help="catalog key the GPU-size challenge is for"
    )
    parser.add_argument(
        "--trials", type=int, default=2_000, help="simulated challenges per f (default 2000)"
    )
    parser.add_argument(
        "--fractions",
        type=parse_list(float),
        default=[0.5, 0.9, 0.99],
        help="fractions of rows the cheaters compute (default 0.5,0.9,0.99)",
    )
    parser.add_argument(
        "--bernoulli",
        action="store_true",
        help="cheaters compute each row with probability f (default: exactly f of the rows)",
    )
    parser.add_argument("--checks", type=int, default=proof.DEFAULT_CHECKS, help="k")
    parser.add_argument(
        "--repeats", type=int, default=20, help="warm verifies per size (GPU size: at most 5)"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the torch-cpu prover")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if any(not 0 < f < 1 for f in args.fractions):
        parser.error("fractions must be in (0, 1)")
    if args.trials < 1 or args.checks < 1 or args.repeats < 1:
        parser.error("--trials, --checks and --repeats must be positive")
    if any(not proof.LEAF_ROWS <= n <= proof.MAX_N or n % proof.LEAF_ROWS for n in args.sizes):
        parser.error(f"sizes must be multiples of {proof.LEAF_ROWS} up to {proof.MAX_N}")

    hw = detect_hardware()
    catalog = load_catalog()
    cls = catalog.classify(hw)
    claimed = catalog.device_fp32_tflops(cls, hw)
    if claimed <= 0:
        raise SystemExit(f"this machine is not in the catalog ({cls.reason}); nothing to plan")
    rules = ProofRules()
    kind = hw.kind.value
    torch_version = None
    if not args.no_torch:
        try:
            import torch

            torch_version = torch.__version__
        except ImportError:
            progress("torch is not installed: no torch-cpu row")
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": hw.cpu_model,
            "physical_cores": hw.cpu_physical_cores,
            "kind": kind,
            "catalog_model": cls.model,
            "claimed_tflops": claimed,
            "numpy": np.__version__,
            "blas_threads": blas_threads_now(),
            "torch": torch_version,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "k": args.checks,
        "target_s": rules.target_s,
        "sizes": sorted(set(args.sizes)),
        "provers": [],
        "verifiers": [],
    }
    try:
        for n in results["sizes"]:
            rows, verifier = bench_cpu_size(
                n,
                kind,
                claimed,
                rules,
                args.checks,
                args.repeats,
                torch=torch_version is not None and n == proof.size_for("cpu"),
            )
            results["provers"].extend(rows)
            results["verifiers"].append(verifier)
        if not args.skip_gpu_size:
            gpu, verifiers = bench_gpu_size(
                args.gpu_model, rules, args.checks, min(args.repeats, 5)
            )
            results["gpu"] = gpu
            results["verifiers"].extend(verifiers)
        results["sim"] = {"n": SIM_N, "rounds": SIM_ROUNDS, "bernoulli": args.bernoulli}
        results["detection"] = bench_detection(
            args.fractions, args.trials, args.checks, SIM_N, SIM_ROUNDS, args.bernoulli
        )
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    results["goal"] = goal_line(results["detection"], args.checks)
    return finish(results, _T0, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
