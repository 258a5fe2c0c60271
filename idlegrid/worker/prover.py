"""Provers: the agent's side of the proof of compute (``core/proof.py`` has the maths).

One small contract, two back-ends::

    class Prover:
        name: str                          "numpy", "torch-cuda", "torch-mps", "torch-cpu"
        kind: str                          the device kind it proves for: "cpu", "apple", "gpu"
        def warm_up(n)                     seed-free preparation, before a challenge is fetched
        def fingerprints(challenge, deadline) -> (rounds × n) int64 array
        def hold_memory(seed, megabytes) -> MemoryHold (answers probes)

``NumpyProver`` is the reference, for CPUs. ``TorchProver`` runs the same
arithmetic on torch devices; ``choose`` picks CUDA, then Apple's MPS, then
numpy (torch is imported lazily, and only if installed). Both produce
bit-identical fingerprints: the generator uses int64 operations that torch and
numpy define identically, and the products are exact integers in float32. (TF32
would be exact too: inputs in [−2, 2] are exact in it and accumulation stays in
float32; the CUDA prover uses plain FP32 because that is the rate the catalog
states.)

On CUDA (``fast``, the default there) the prover spends as little as it can
beside the FP32 product, which is what the proof times: A is generated in five
in-place int64 passes and a table look-up, the fingerprints Σ w·c² are two
float64 matrix-vector products (exact: see ``_fingerprints_fast``), rounds are
queued without waiting for each other (the CPU waits only for the round
``queue_rounds`` back), and the fingerprints come back to the host once, at the
end. The general path (MPS, the CPU) is ``core.proof``'s arithmetic in torch.

A prover stops between rounds once the deadline has passed (``ProofTimeout``):
a device that cannot make it does not burn its machine for nothing.

The memory check (``hold_memory``) allocates the claimed memory on each device
(GPU memory for GPUs), fills it with seed-derived data and answers probes on
it. With ``fast`` the blocks are generated on the device itself (two kernels
per 32 MiB; copying numpy's blocks over, as before, ran at 0.8 GiB/s on an
H200, 92 s for the 72 GiB asked of it then). It
catches a stock agent on a device with less memory than it claims
(``out_of_memory``); it is *not* sound against a modified agent, which can
regenerate probed data from the seed (see docs/proof-of-compute.md).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from idlegrid.core import proof

log = logging.getLogger("idlegrid.worker.prover")


class ProofTimeout(Exception):
    """The deadline passed before the work was done."""


class Prover(Protocol):
    name: str
    kind: str

    def warm_up(self, n: int) -> None: ...

    def fingerprints(self, challenge: proof.Challenge, deadline: float) -> proof.IntArray: ...

    def hold_memory(self, seed: bytes, megabytes: int) -> MemoryHold: ...


class NumpyProver:
    name = "numpy"
    kind = "cpu"
    chunk_rows = 1024  # the deadline is checked between chunks, and temporaries stay small

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock

    def warm_up(self, n: int) -> None:
        """Generate the public B pool for size ``n`` (it is kept between challenges)."""
        for index in range(proof.POOL_SIZE):
            proof.pool_matrix(n, index)

    def fingerprints(self, challenge: proof.Challenge, deadline: float) -> proof.IntArray:
        n = challenge.n
        w = proof.weights(challenge.seed, n)
        out = np.empty((challenge.rounds, n), dtype=np.int64)
        for r in range(challenge.rounds):
            key = proof.a_key(challenge.seed, r)
            b = proof.pool_matrix(n, proof.pool_index(challenge.seed, r))
            for start in range(0, n, self.chunk_rows):
                if self.clock() > deadline:
                    raise ProofTimeout(f"stopped in round {r} of {challenge.rounds}")
                rows = np.arange(start, min(n, start + self.chunk_rows), dtype=np.int64)
                a = proof.block_f32(key, rows, n)
                out[r, rows] = proof.fingerprints(a @ b, w)
        return out

    def hold_memory(self, seed: bytes, megabytes: int) -> MemoryHold:
        # Memory is asked of GPU claims only; a CPU prover has no GPU memory to hold.
        raise MemoryError("the CPU prover holds no GPU memory")


class TorchProver:
    """The same arithmetic on torch devices. With several GPUs, round r runs on
    GPU r mod G, all GPUs at once: a device claiming 8 GPUs must have 8 to keep
    up with the claimed throughput."""

    queue_rounds = 4  # CUDA: rounds queued ahead of the one the CPU waits for
    fill_batch_blocks = 4096  # memory blocks whose keys are derived and sent at once
    fill_chunk_blocks = 32  # memory blocks generated per pair of kernels (32 MiB: in L2)
    fill_split = 512  # a block's word index t = hi·512 + lo (see ``fill``)
    segment_blocks = 1024  # memory blocks per allocation (1 GiB)

    def __init__(
        self,
        devices: list[str],
        clock: Callable[[], float] = time.monotonic,
        holds_memory: bool = True,
        fast: bool | None = None,
    ) -> None:
        """``holds_memory=False`` refuses memory checks (a CPU has no GPU memory).
        ``fast`` (default: on CUDA) generates A and the memory image on the device
        and takes the fingerprints in float64; MPS has no float64."""
        import torch

        self.holds_memory = holds_memory
        self.torch: Any = torch
        self.devices = [torch.device(d) for d in devices]
        device_type = self.devices[0].type
        self.name = f"torch-{device_type}"
        self.kind = {"cuda": "gpu", "mps": "apple"}.get(device_type, "cpu")
        self.fast = device_type == "cuda" if fast is None else fast
        self.clock = clock
        self._pool: dict[tuple[str, int, int], Any] = {}
        self._consts: dict[tuple[str, str, int], Any] = {}
        if device_type == "cuda":
            # Plain FP32, the rate the catalog's fp32_tflops states. TF32 would also
            # be exact here (see the module doc), only faster than the claim.
            torch.backends.cuda.matmul.allow_tf32 = False

    # -- generation ------------------------------------------------------------------

    def block(self, key: tuple[int, int], rows: Any, n: int) -> Any:
        """``core.proof.block`` in torch (int64 on the rows' device)."""
        torch = self.torch
        a, b = key
        p = proof.P
        row_part = (a * ((rows * n) % p)) % p
        col_part = (a * torch.arange(n, dtype=torch.int64, device=rows.device) + b) % p
        x = row_part[:, None] + col_part[None, :]
        x -= p * (x >= p).to(torch.int64)
        y = (x * x) >> 31
        return (((y & 255) * 5) >> 8) - 2

    def _const(self, what: str, device: Any, n: int) -> Any:
        """Seed-free tensors kept per device: column indices, row bases, the value table."""
        key = (what, str(device), n)
        if key not in self._consts:
            torch = self.torch
            idx = torch.arange(n, dtype=torch.int64, device=device)
            if what == "rows":  # (i·n) mod p: the row part of the affine map before ·a
                self._consts[key] = (idx * n) % proof.P
            elif what == "table":  # ((k·5) >> 8) − 2 for k = y & 255
                self._consts[key] = (((idx * 5) >> 8) - 2).to(torch.float32)
            else:
                self._consts[key] = idx
        return self._consts[key]

    def matrix(self, key: tuple[int, int], n: int, device: Any) -> Any:
        """``core.proof.matrix(key, n)`` as float32 on ``device``."""
        torch = self.torch
        if not self.fast:
            rows = self._const("cols", device, n)
            return self.block(key, rows, n).to(torch.float32)
        a, b = key
        p = proof.P
        # The same integers as core.proof.block, in fewer passes over n² int64 words:
        # x = (row part + column part) in [0, 2p), reduced once; y = x² >> 31 (x < 2³¹,
        # so x² < 2⁶²); the last two steps, ((y & 255)·5 >> 8) − 2, are a 256-entry table.
        row_part = (self._const("rows", device, n) * a).remainder_(p)
        col_part = (self._const("cols", device, n) * a).add_(b).remainder_(p)
        x = torch.add(row_part[:, None], col_part[None, :])
        x.remainder_(p)
        x.mul_(x)
        x.bitwise_right_shift_(31)
        x.bitwise_and_(255)
        return torch.take(self._const("table", device, 256), x)

    def _b(self, device: Any, n: int, index: int) -> Any:
        key = (str(device), n, index)
        if key not in self._pool:
            self._pool[key] = self.matrix(proof.b_key(n, index), n, device)
        return self._pool[key]

    # -- fingerprints ----------------------------------------------------------------

    def weights(self, seed: bytes, n: int, device: Any) -> Any:
        """The fingerprint weights on ``device``: int64 (n), or with ``fast`` two float64
        vectors, w mod 2¹⁰ and w >> 10, for ``_fingerprints_fast``."""
        torch = self.torch
        w = torch.from_numpy(proof.weights(seed, n)).to(device)
        if not self.fast:
            return w
        return (w & 1023).to(torch.float64), (w >> 10).to(torch.float64)

    def row_fingerprints(self, c: Any, w: Any) -> Any:
        """Σ_j w_j · c_j² mod p of every row of the float32 products ``c`` (int64)."""
        torch = self.torch
        if self.fast:
            return self._fingerprints_fast(c, w)
        c = c.to(torch.int64)
        # Elementwise then sum: int64 matmul is not available on every device.
        return ((c * c) * w).sum(dim=1) % proof.P

    def _fingerprints_fast(self, c: Any, w: tuple[Any, Any]) -> Any:
        """The fingerprints as two float64 matrix-vector products, exactly: |c| ≤ 4n, so
        c² ≤ 2³⁰ for n ≤ MAX_N; with w split into 10-bit halves every term c²·w_half is
        below 2⁴⁰ and every partial sum below n·2⁴⁰ ≤ 2⁵³, so float64 holds each exactly
        in any order of summation; Σ c²·w = (Σ c²·w_hi)·2¹⁰ + Σ c²·w_lo < 2⁶³. Three
        passes over the products (widen, square, read twice) where int64 takes four."""
        torch = self.torch
        w_lo, w_hi = w
        c64 = c.to(torch.float64)
        c64.mul_(c64)
        lo = torch.mv(c64, w_lo).to(torch.int64)
        hi = torch.mv(c64, w_hi).to(torch.int64)
        return (hi * 1024 + lo) % proof.P

    def _round(self, device: Any, seed: bytes, r: int, n: int, w: Any) -> Any:
        """Round r's fingerprints (int64 on the device, not waited for)."""
        a = self.matrix(proof.a_key(seed, r), n, device)
        c = a @ self._b(device, n, proof.pool_index(seed, r))
        return self.row_fingerprints(c, w)

    def _synchronize(self, device: Any) -> None:
        if device.type == "cuda":
            self.torch.cuda.synchronize(device)
        elif device.type == "mps":
            self.torch.mps.synchronize()

    def _rounds(
        self,
        device: Any,
        challenge: proof.Challenge,
        rounds: range,
        deadline: float,
        out: proof.IntArray,
    ) -> None:
        torch = self.torch
        n = challenge.n
        w = self.weights(challenge.seed, n, device)
        fps = torch.empty((len(rounds), n), dtype=torch.int64, device=device)
        queued: list[Any] = []
        for i, r in enumerate(rounds):
            # CUDA runs ahead of the CPU: wait for the round queue_rounds back, so that
            # the deadline is checked against work actually done, and the GPU never idles.
            if len(queued) >= self.queue_rounds:
                queued.pop(0).synchronize()
            if self.clock() > deadline:
                raise ProofTimeout(f"stopped at round {r} of {challenge.rounds}")
            fps[i] = self._round(device, challenge.seed, r, n, w)
            if device.type == "cuda":
                event = torch.cuda.Event()
                event.record(torch.cuda.current_stream(device))
                queued.append(event)
            else:
                self._synchronize(device)
        out[np.arange(rounds.start, rounds.stop, rounds.step)] = fps.cpu().numpy()

    def fingerprints(self, challenge: proof.Challenge, deadline: float) -> proof.IntArray:
        """MemoryError when a device runs out of memory (it may be holding a fill)."""
        out = np.empty((challenge.rounds, challenge.n), dtype=np.int64)
        g = len(self.devices)
        try:
            if g == 1:
                self._rounds(self.devices[0], challenge, range(challenge.rounds), deadline, out)
                return out
            with ThreadPoolExecutor(g) as pool:  # kernels release the GIL
                futures = [
                    pool.submit(
                        self._rounds, d, challenge, range(i, challenge.rounds, g), deadline, out
                    )
                    for i, d in enumerate(self.devices)
                ]
                for f in futures:
                    f.result()
        except self.torch.OutOfMemoryError as exc:
            raise MemoryError(str(exc)) from None
        return out

    def warm_up(self, n: int) -> None:
        """Everything seed-free, before a challenge is fetched (the server's clock starts
        at the fetch): the device's context, cuBLAS, the public B pool for size ``n``,
        and one round on a throwaway seed, which loads every kernel a proof uses."""
        for device in self.devices:
            w = self.weights(b"warm-up", n, device)
            self._round(device, b"warm-up", 0, n, w).cpu()
            for index in range(proof.POOL_SIZE):
                self._b(device, n, index)
            self._synchronize(device)

    # -- memory ----------------------------------------------------------------------

    def fill(self, seed: bytes, megabytes: int) -> list[list[Any]]:
        """The memory image ``proof.memory_block(seed, i)`` for every block, on every device:
        per device a list of (≤ ``segment_blocks`` × words) int64 segments. All memory is
        allocated first (torch.OutOfMemoryError before any work). With ``fast`` each block
        is generated where it is held, while the CPU derives the next batch's keys:
        word t = hi·S + lo (S = ``fill_split``) is ((a·hi·S mod p) + (a·lo + b mod p))
        mod p, two small tables per block and then one sum and one reduction per word,
        of a value below 2p < 2³² (int64 division's short path). Otherwise numpy's
        blocks are copied over."""
        torch = self.torch
        blocks = proof.memory_blocks(megabytes)
        seg = self.segment_blocks
        words = proof.MEMORY_WORDS
        held = [
            [
                torch.empty((min(seg, blocks - s), words), dtype=torch.int64, device=d)
                for s in range(0, blocks, seg)
            ]
            for d in self.devices
        ]
        if not self.fast:
            for segments in held:
                for i in range(blocks):
                    segments[i // seg][i % seg].copy_(torch.from_numpy(proof.memory_block(seed, i)))
            return held
        split = self.fill_split
        lows = [self._const("cols", d, split)[None, :] for d in self.devices]
        highs = [self._const("cols", d, words // split)[None, :] * split for d in self.devices]
        batch = max(seg, self.fill_batch_blocks // seg * seg)  # batches hold whole segments
        chunk = self.fill_chunk_blocks
        for start in range(0, blocks, batch):
            keys = torch.from_numpy(proof.memory_keys(seed, start, min(batch, blocks - start)))
            if self.devices[0].type == "cuda":
                keys = keys.pin_memory()  # copied without waiting; the GPU fills meanwhile
            for d, device in enumerate(self.devices):
                k = keys.to(device, non_blocking=True)
                a, b = k[:, :1], k[:, 1:]
                low = (a * lows[d] + b).remainder_(proof.P)[:, None, :]  # (a·lo + b) mod p
                high = (a * highs[d]).remainder_(proof.P)[:, :, None]  # (a·hi·S) mod p
                for s in range(0, len(k), seg):
                    segment = held[d][(start + s) // seg]
                    for c in range(0, len(segment), chunk):
                        e = min(c + chunk, len(segment))
                        part = segment[c:e].view(e - c, words // split, split)
                        torch.add(high[s + c : s + e], low[s + c : s + e], out=part)
                        part.remainder_(proof.P)
        for device in self.devices:
            self._synchronize(device)
        return held

    def _release(self) -> None:
        gc.collect()
        if self.devices[0].type == "cuda":
            self.torch.cuda.empty_cache()  # give the memory back to the renter's processes

    def hold_memory(self, seed: bytes, megabytes: int) -> MemoryHold:
        """Fill ``megabytes`` on every device (raises MemoryError when one cannot)."""
        if not self.holds_memory:
            raise MemoryError("this prover holds no GPU memory")
        try:
            held = self.fill(seed, megabytes)
        except self.torch.OutOfMemoryError as exc:
            message = str(exc)
        else:
            return self._hold(held)
        self._release()  # out of the except block: its traceback kept the fill alive
        raise MemoryError(message)

    def _hold(self, held: list[list[Any]]) -> MemoryHold:
        seg = self.segment_blocks

        def read(i: int) -> bytes:
            data: bytes = held[0][i // seg][i % seg].cpu().numpy().tobytes()
            return data

        def release() -> None:
            held.clear()
            self._release()

        return MemoryHold(read, release)


def torch_devices() -> list[str]:
    """Torch accelerators here: every CUDA GPU, else Apple's MPS, else none."""
    try:
        import torch
    except ImportError:
        return []
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return ["mps"]
    return []


def choose(clock: Callable[[], float] = time.monotonic) -> NumpyProver | TorchProver:
    """CUDA, then MPS, then numpy on the CPU.

    Torch on the CPU is about 1.4× faster than numpy on an idle machine, but its
    spinning thread pool collapses when the cores are shared (three agents on
    two cores timed out), so the CPU gets numpy."""
    devices = torch_devices()
    if devices:
        return TorchProver(devices, clock)
    return NumpyProver(clock)


# -- memory ------------------------------------------------------------------------------


class MemoryHold:
    """Memory the prover holds; answers probes from it until ``release``."""

    def __init__(
        self, read: Callable[[int], bytes], release: Callable[[], None] = lambda: None
    ) -> None:
        self.read = read
        self._release = release

    def answer(self, index: int, nonce: bytes) -> str:
        return proof.memory_answer(self.read(index), nonce)

    def release(self) -> None:
        """Free the memory (a GPU's goes back to the device, not to torch's cache)."""
        self._release()
