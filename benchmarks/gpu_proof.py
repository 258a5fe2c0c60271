"""The proof of compute on a real NVIDIA GPU: what the agent detects, what the server
plans for it, what the CUDA prover measures, what the verifier says, and whether a
device claiming a faster model is caught.

Run it, on a machine with CUDA and ``torch``, as::

    .venv/bin/python benchmarks/gpu_proof.py [--memory-mb 2048] [--compare-rounds 2]
                                             [--cheat b200-sxm-180gb,rtx-5090,...]
                                             [--model KEY] [--json] [--save results.json]

Without a CUDA device (no ``torch``, or torch sees no GPU) it prints one line,
``no CUDA device: ...``, and exits 0: there is nothing to measure. Exit 1 means a
check that must hold failed (the CUDA fingerprints differ from numpy's, or an honest
proof did not verify); exit 2 means the GPU is not in the catalog, so there is no
claim to plan a challenge for (``--model KEY`` plans for that catalog model instead).
``benchmarks/gpu_check.sh`` is the whole device check (the CUDA test, then this script);
docs/proof-of-compute.md has its figures on an H200.

It prints (``--json``: one JSON object instead; ``--save PATH``: that object written
to PATH as well as the report):

1. **Detected hardware**: ``detect_hardware()`` (NVML: each GPU's name and memory, the
   driver and CUDA versions), ``catalog.classify`` (model, GPU count, reason when
   unsupported), the model's reward multiplier and the claimed FP32 TFLOPS
   (``catalog.device_fp32_tflops``), beside what torch reports.

2. **Proofs**, each planned as ``services/proofs.py`` plans one (``pf.plan`` with the
   claimed throughput, ``ServerSettings``' defaults ``proof_target_s`` = 1 s and
   ``proof_n`` = 0, so n = ``size_for("gpu")`` = 4096; the deadline from ``pf.deadline_s``
   under the default ``ProofRules``), proved by ``TorchProver(["cuda:0"])`` with the
   agent's deadline (it stops between rounds once it has passed), committed with
   ``pf.commit`` and judged by ``proof_policy.judge``. The prover time is
   fingerprints + commit, wall clock (every round copies its fingerprints to the host,
   so the GPU's work is inside it):

   - *honest, cold*: the first challenge of a fresh prover, as after the agent starts:
     CUDA's context, cuBLAS and the public B pool are made inside it. It is the warm-up;
   - *honest*: the same challenge again, warm: the row that says what this GPU proves;
   - *cheats*: the same GPU claiming another catalog model (``--cheat``, ``KEY`` or
     ``KEY:GPUS``; by default the B200, the highest reward multiplier; the RTX 5090, the
     highest FP32 figure; and eight B200s), each planned for that claim. A cheat is
     caught when the verdict is ``underperforms_claim`` or ``timeout``.

3. **Checks on the honest proof**: k = ``DEFAULT_CHECKS`` checks drawn with
   ``pf.select_checks`` from fresh entropy, opened with ``pf.open_check`` and verified
   with ``pf.verify`` on this machine's CPU: *cold* is the first verify (it generates
   the public Bs the checks touch, 64 MiB each), *warm* the median of ``--repeats``
   more, each with fresh checks. A forged fingerprint (one checked row changed, the tree
   rebuilt over the forgery) must be refused. Then the challenge's first
   ``--compare-rounds`` rounds are proved again by ``NumpyProver`` on the CPU, and must
   equal the CUDA fingerprints bit for bit.

4. **Memory**: the server asks a GPU claim to hold ``proof_memory_fraction`` (½) of the
   model's memory (``vram_gb`` × 1024 × ½ MiB), which the agent fills with
   ``TorchProver.hold_memory`` *before* it sends its commitment, so the fill counts
   against the deadline. It is timed here for ``--memory-mb`` (the full size would take
   minutes), four probes are answered and checked as the server checks them, and the
   time is scaled to the server's size. Beside it: the same blocks generated on the GPU
   with torch's int64 arithmetic, at the server's full size (not the agent's path
   today; the probe answers must match).
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from common import finish, machine, peak_rss_mb

from idlegrid.catalog import load_catalog
from idlegrid.core import proof as pf
from idlegrid.core.proof_policy import ProofRules, judge
from idlegrid.protocol import Classification
from idlegrid.worker.hardware import detect_hardware
from idlegrid.worker.prover import NumpyProver, ProofTimeout, TorchProver

DEVICE = "cuda:0"
PROOF_N = 0  # ServerSettings.proof_n: 0 means core.proof.size_for(kind)
MEMORY_FRACTION = 0.5  # ServerSettings.proof_memory_fraction
MEMORY_PROBES = 4  # ServerSettings.proof_memory_probes
DEFAULT_CHEATS = "b200-sxm-180gb,rtx-5090,b200-sxm-180gb:8"
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


def synchronize(torch: Any) -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


# -- 1: detection ----------------------------------------------------------------------------


def detected(hw: Any, cls: Any, claimed: float) -> dict[str, Any]:
    catalog = load_catalog()
    model = catalog.get(cls.model) if cls.model else None
    out: dict[str, Any] = {
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
    return out


def torch_view(torch: Any) -> dict[str, Any]:
    """What torch says of the device (asked after the cold proof, which must start CUDA)."""
    out: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if DEVICE.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        out["torch_device"] = props.name
        out["torch_memory_mib"] = props.total_memory // MIB
        out["multiprocessors"] = props.multi_processor_count
        out["capability"] = f"{props.major}.{props.minor}"
    return out


# -- 2: proofs -------------------------------------------------------------------------------


def prove(
    prover: TorchProver,
    case: str,
    claim: str,
    claimed: float,
    challenge: pf.Challenge,
    rules: ProofRules,
) -> tuple[dict[str, Any], pf.IntArray | None, pf.MerkleTree | None]:
    """One challenge proved as the agent proves it (stopping at its deadline), judged as
    the server judges it."""
    deadline = pf.deadline_s(challenge, claimed, rules.min_efficiency, rules.allowance_s)
    fps = tree = None
    note = ""
    start = time.monotonic()
    try:
        fps = prover.fingerprints(challenge, start + deadline)
        t1 = time.monotonic()
        tree = pf.commit(challenge, fps)
    except ProofTimeout as exc:
        t1 = time.monotonic()
        note = str(exc)
    end = time.monotonic()
    reason, measured = judge(end - start, deadline, challenge.work_flop, claimed, rules)
    if fps is None:
        measured = math.nan  # it stopped: there is no throughput to state
    row = {
        "case": case,
        "claim": claim,
        "claimed_tflops": round(claimed, 3),
        "n": challenge.n,
        "rounds": challenge.rounds,
        "work_gflop": round(challenge.work_flop / 1e9, 1),
        "deadline_s": round(deadline, 3),
        "fingerprints_s": round(t1 - start, 4),
        "commit_s": round(end - t1, 4),
        "prover_s": round(end - start, 4),
        "measured_tflops": None if math.isnan(measured) else round(measured, 2),
        "percent_of_claim": None if math.isnan(measured) else round(100 * measured / claimed, 1),
        "verdict": reason.value if reason else "verified",
        "note": note,
    }
    progress(
        f"{case} ({claim}): {row['verdict']}, {row['prover_s']:.3f} s for {challenge.rounds} "
        f"rounds, {row['measured_tflops']} TFLOPS measured of {claimed:.1f} claimed"
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


# -- 3: checks -------------------------------------------------------------------------------


def check(
    challenge: pf.Challenge,
    tree: pf.MerkleTree,
    fps: pf.IntArray,
    repeats: int,
    compare_rounds: int,
) -> dict[str, Any]:
    def opened() -> tuple[list[tuple[int, int]], list[pf.Opening]]:
        checks = pf.select_checks(challenge, os.urandom(32), pf.DEFAULT_CHECKS)
        return checks, [pf.open_check(challenge, tree, fps, r, row) for r, row in checks]

    pf.clear_pool()
    checks, openings = opened()
    t0 = time.perf_counter()
    cold_problem = pf.verify(challenge, tree.root, checks, openings)
    cold_s = time.perf_counter() - t0
    warm, problems = [], [cold_problem]
    for _ in range(repeats):
        checks, openings = opened()
        t0 = time.perf_counter()
        problems.append(pf.verify(challenge, tree.root, checks, openings))
        warm.append(time.perf_counter() - t0)
    progress(f"verify: cold {1000 * cold_s:.0f} ms, warm {1000 * statistics.median(warm):.1f} ms")

    # A forgery: one checked row's fingerprint changed, and a tree built over the forgery.
    checks = pf.select_checks(challenge, os.urandom(32), pf.DEFAULT_CHECKS)
    forged = fps.copy()
    r, row = checks[0]
    forged[r, row] = (forged[r, row] + 1) % pf.P
    forged_tree = pf.commit(challenge, forged)
    forged_openings = [pf.open_check(challenge, forged_tree, forged, r, i) for r, i in checks]
    forgery = pf.verify(challenge, forged_tree.root, checks, forged_openings)

    rounds = min(compare_rounds, challenge.rounds)
    progress(f"numpy: proving the first {rounds} rounds on the CPU")
    t0 = time.perf_counter()
    by_numpy = NumpyProver().fingerprints(
        pf.Challenge(challenge.seed, challenge.n, rounds), math.inf
    )
    numpy_s = time.perf_counter() - t0
    identical = bool(np.array_equal(by_numpy, fps[:rounds]))
    progress(f"numpy: {numpy_s:.1f} s, identical to CUDA: {identical}")
    return {
        "k": pf.DEFAULT_CHECKS,
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


# -- 4: memory -------------------------------------------------------------------------------


def probes_agree(seed: bytes, blocks: int, answer: Any) -> bool:
    """Whether ``answer(index, nonce)`` gives the server's answer to fresh probes."""
    for _ in range(MEMORY_PROBES):
        index = int.from_bytes(os.urandom(4), "big") % blocks
        nonce = os.urandom(16)
        expected = pf.memory_answer(pf.memory_block(seed, index).tobytes(), nonce)
        if answer(index, nonce) != expected:
            return False
    return True


def tensor_answer(held: Any, index: int, nonce: bytes) -> str:
    return pf.memory_answer(held[index].cpu().numpy().tobytes(), nonce)


def fill_on_device(torch: Any, seed: bytes, megabytes: int) -> Any:
    """``pf.memory_block(seed, i)`` for every block, generated on the GPU: a (blocks ×
    words) int64 tensor, 1 GiB at a time so that no temporary is made."""
    blocks = pf.memory_blocks(megabytes)
    words = pf.MEMORY_BLOCK_MB * MIB // 8
    keys = [pf._key(b"M", seed, i) for i in range(blocks)]  # memory_block's own key
    a = torch.tensor([k[0] for k in keys], dtype=torch.int64, device=DEVICE)
    b = torch.tensor([k[1] for k in keys], dtype=torch.int64, device=DEVICE)
    idx = torch.arange(words, dtype=torch.int64, device=DEVICE)
    out = torch.empty((blocks, words), dtype=torch.int64, device=DEVICE)
    step = max(1, 1024 // pf.MEMORY_BLOCK_MB)
    for s in range(0, blocks, step):
        part = out[s : s + step]
        torch.mul(a[s : s + step, None], idx[None, :], out=part)
        part.add_(b[s : s + step, None]).remainder_(pf.P)
    synchronize(torch)
    return out


def memory(
    prover: TorchProver, torch: Any, megabytes: int, server_mb: int, honest: dict[str, Any]
) -> dict[str, Any]:
    rules = ProofRules()
    seed = os.urandom(32)
    progress(f"memory: hold_memory({megabytes} MiB)")
    t0 = time.perf_counter()
    hold = prover.hold_memory(seed, megabytes)
    synchronize(torch)
    hold_s = time.perf_counter() - t0
    hold_ok = probes_agree(seed, pf.memory_blocks(megabytes), hold.answer)
    del hold
    gc.collect()
    if DEVICE.startswith("cuda"):
        torch.cuda.empty_cache()
    scaled_s = hold_s * server_mb / megabytes
    # The agent fills the memory after the fingerprints and before it commits.
    with_hold = honest["prover_s"] + scaled_s
    reason, _ = judge(
        with_hold, honest["deadline_s"], honest["work_gflop"] * 1e9, honest["claimed_tflops"], rules
    )
    progress(f"memory: {hold_s:.2f} s; {server_mb} MiB would take about {scaled_s:.0f} s")

    progress(f"memory: the same {server_mb} MiB generated on the GPU")
    seed = os.urandom(32)
    t0 = time.perf_counter()
    filled = fill_on_device(torch, seed, server_mb)
    fill_s = time.perf_counter() - t0

    fill_ok = probes_agree(seed, filled.shape[0], functools.partial(tensor_answer, filled))
    peak_mib = torch.cuda.max_memory_allocated() // MIB if DEVICE.startswith("cuda") else None
    del filled
    gc.collect()
    if DEVICE.startswith("cuda"):
        torch.cuda.empty_cache()
    progress(f"memory: generated on the GPU in {fill_s:.2f} s, probes right: {fill_ok}")
    return {
        "server_mb": server_mb,
        "hold_mb": megabytes,
        "hold_s": round(hold_s, 3),
        "hold_mib_per_s": round(megabytes / hold_s),
        "hold_probes_right": hold_ok,
        "server_hold_s_scaled": round(scaled_s, 1),
        "honest_commit_s_with_hold": round(with_hold, 1),
        "honest_verdict_with_hold": reason.value if reason else "verified",
        "device_fill_s": round(fill_s, 3),
        "device_fill_mib_per_s": round(server_mb / fill_s),
        "device_fill_probes_right": fill_ok,
        "gpu_peak_allocated_mib": peak_mib,
    }


# -- the report ------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def print_report(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=180)
    d = results["detected"]
    hw = Table(title="Detected (detect_hardware, catalog.classify)", title_justify="left")
    hw.add_column("what")
    hw.add_column("value")
    for gpu in d["gpus"]:
        hw.add_row(f"GPU {gpu['index']} (NVML)", f"{gpu['name']}, {gpu['vram_mb']:,} MiB")
    hw.add_row("driver / CUDA (NVML)", f"{d['driver']} / {d['cuda']}")
    if "torch" in d:
        hw.add_row(
            "torch",
            f"{d['torch']} (CUDA {d['torch_cuda']})"
            + (
                f": {d['torch_device']}, {d['torch_memory_mib']:,} MiB, "
                f"{d['multiprocessors']} SMs, compute capability {d['capability']}"
                if "torch_device" in d
                else ""
            ),
        )
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
    if "proofs" not in results:
        return print_footer(console, results)

    proofs = Table(
        title=f"Proofs on {DEVICE}: planned as the server plans them, judged by "
        "proof_policy.judge (default ProofRules); TF = FP32 TFLOPS",
        title_justify="left",
    )
    for name in (
        "case",
        "claim",
        "claimed TF",
        "rounds",
        "GFLOP",
        "deadline s",
        "prover s",
        "measured TF",
        "% of claim",
        "verdict",
        "caught",
    ):
        proofs.add_column(
            name, justify="left" if name in ("case", "claim", "verdict", "caught") else "right"
        )
    proofs.add_column("note")
    for p in results["proofs"]:
        proofs.add_row(
            p["case"],
            p["claim"],
            f"{p['claimed_tflops']:.1f}",
            f"{p['rounds']:,}",
            f"{p['work_gflop']:,.0f}",
            f"{p['deadline_s']:.2f}",
            f"{p['prover_s']:.3f}",
            _num(p["measured_tflops"], 1),
            "—" if p["percent_of_claim"] is None else f"{p['percent_of_claim']:.0f}%",
            p["verdict"],
            {True: "yes", False: "NO"}.get(p.get("caught"), ""),
            p["note"],
        )
    console.print(proofs)

    c = results.get("checks")
    if c is None:
        console.print("No checks: the honest proof did not finish.")
        return print_footer(console, results)
    forgery = f"refused ({c['forgery_reason']})" if c["forgery_refused"] else "ACCEPTED"
    console.print(
        f"Verifier (pf.verify, k = {c['k']}, on the CPU): cold {c['cold_ms']:,.0f} ms "
        f"(generates the public Bs the checks touch), warm {_num(c['warm_ms'])} ms (median of "
        f"{c['warm_runs']}); honest proof "
        f"{'verified' if c['verified'] else 'REFUSED: ' + '; '.join(c['honest_problems'])}; "
        f"forged row {forgery}. "
        f"NumpyProver, first {c['compare_rounds']} rounds in {c['numpy_s']:.1f} s: "
        f"{'identical to CUDA bit for bit' if c['identical_to_numpy'] else 'DIFFERS from CUDA'}.",
        highlight=False,
    )
    mem = results.get("memory")
    if mem:
        console.print(
            f"Memory: hold_memory({mem['hold_mb']:,} MiB) took {mem['hold_s']:.2f} s "
            f"({mem['hold_mib_per_s']:,} MiB/s), probes "
            f"{'right' if mem['hold_probes_right'] else 'WRONG'}; the server's "
            f"{mem['server_mb']:,} MiB would take about {mem['server_hold_s_scaled']:,.0f} s, so "
            f"the honest commitment would come at {mem['honest_commit_s_with_hold']:,.1f} s: "
            f"{mem['honest_verdict_with_hold']}. The same {mem['server_mb']:,} MiB generated on "
            f"the GPU: {mem['device_fill_s']:.2f} s, probes "
            f"{'right' if mem['device_fill_probes_right'] else 'WRONG'} (peak allocated "
            f"{_num(mem['gpu_peak_allocated_mib'], 0)} MiB).",
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
    parser = argparse.ArgumentParser(
        description="Prove, verify and judge the proof of compute on this machine's CUDA GPU."
    )
    parser.add_argument(
        "--memory-mb", type=int, default=2048, help="hold_memory size timed (0: skip memory)"
    )
    parser.add_argument(
        "--compare-rounds", type=int, default=2, help="rounds NumpyProver recomputes (default 2)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="warm verifies (default 5)")
    parser.add_argument(
        "--cheat",
        default=DEFAULT_CHEATS,
        help=f"claims to prove against, KEY or KEY:GPUS, comma-separated ({DEFAULT_CHEATS})",
    )
    parser.add_argument(
        "--model",
        help="plan for this catalog model (× the GPUs detected) when the catalog does not "
        "classify the GPU",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--save", metavar="PATH", help="also write the JSON object to PATH")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    try:
        cheats = parse_cheats(args.cheat)
        for key in [k for k, _ in cheats] + ([args.model] if args.model else []):
            catalog.get(key)
    except (KeyError, ValueError) as exc:
        parser.error(f"--cheat: {exc}")
    if args.compare_rounds < 1 or args.repeats < 0 or args.memory_mb < 0:
        parser.error("--compare-rounds must be positive, --repeats and --memory-mb not negative")

    problem = cuda_problem()
    if problem is not None:
        print(f"no CUDA device: {problem}; nothing to measure")
        return 0
    import torch

    hw = detect_hardware()
    cls = catalog.classify(hw)
    if cls.model is None and args.model:
        progress(f"not classified ({cls.reason}); planning for --model {args.model}")
        cls = Classification(kind=hw.kind, model=args.model, processors=max(1, len(hw.gpus)))
    claimed = catalog.device_fp32_tflops(cls, hw)
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
    kind = hw.kind.value
    challenge = pf.plan(os.urandom(32), kind, claimed, rules.target_s, n=PROOF_N)
    claim = f"{cls.model} × {cls.processors}"
    progress(f"honest: {challenge.rounds} rounds of n = {challenge.n}; cold, then warm")
    prover = TorchProver([DEVICE])
    cold, _, _ = prove(prover, "honest, cold", claim, claimed, challenge, rules)
    honest, fps, tree = prove(prover, "honest", claim, claimed, challenge, rules)
    results["detected"] |= torch_view(torch)
    proofs = [cold, honest]
    for key, gpus in cheats:
        model = catalog.get(key)
        cheat_claimed = model.fp32_tflops * gpus
        planned = pf.plan(os.urandom(32), kind, cheat_claimed, rules.target_s, n=PROOF_N)
        row, _, _ = prove(prover, "cheat", f"{key} × {gpus}", cheat_claimed, planned, rules)
        row["caught"] = row["verdict"] in ("underperforms_claim", "timeout")
        proofs.append(row)
    results["proofs"] = proofs
    results["cheats_caught"] = sum(p.get("caught", False) for p in proofs)

    if fps is None or tree is None:
        results["failures"].append("the honest proof timed out")
    else:
        results["checks"] = check(challenge, tree, fps, args.repeats, args.compare_rounds)
        if not results["checks"]["verified"]:
            results["failures"].append("an honest proof was refused")
        if not results["checks"]["identical_to_numpy"]:
            results["failures"].append("CUDA fingerprints differ from numpy's")
        if not results["checks"]["forgery_refused"]:
            results["failures"].append("a forged fingerprint was accepted")
    if args.memory_mb:
        model = catalog.get(cls.model)
        server_mb = int(model.vram_gb * 1024 * MEMORY_FRACTION)
        results["memory"] = memory(prover, torch, args.memory_mb, server_mb, honest)
        if not (
            results["memory"]["hold_probes_right"] and results["memory"]["device_fill_probes_right"]
        ):
            results["failures"].append("a memory probe was answered wrongly")
    results["peak_rss_mb"] = round(peak_rss_mb())
    finish(results, _T0, args.json, print_report)
    if args.save:
        import json

        with open(args.save, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
