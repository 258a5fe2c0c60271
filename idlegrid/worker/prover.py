"""Provers: the agent's side of the proof of compute (``core/proof.py`` has the maths).

One small contract, two back-ends::

    class Prover:
        name: str                          "numpy", "torch-cuda", "torch-mps", "torch-cpu"
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

A prover stops between rounds once the deadline has passed (``ProofTimeout``):
a device that cannot make it does not burn its machine for nothing.

The memory check (``hold_memory``) allocates the claimed memory on each device
(GPU memory for GPUs), fills it with seed-derived data and answers probes on
it. It catches a stock
agent on a device with less memory than it claims (``out_of_memory``); it is
*not* sound against a modified agent, which can regenerate probed data from the
seed (see docs/proof-of-compute.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from idlegrid.core import proof as pf

log = logging.getLogger("idlegrid.worker.prover")


class ProofTimeout(Exception):
    """The deadline passed before the work was done."""


class Prover(Protocol):
    name: str

    def fingerprints(self, challenge: pf.Challenge, deadline: float) -> pf.IntArray: ...

    def hold_memory(self, seed: bytes, megabytes: int) -> MemoryHold: ...


class NumpyProver:
    name = "numpy"
    chunk_rows = 1024  # the deadline is checked between chunks, and temporaries stay small

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock

    def fingerprints(self, challenge: pf.Challenge, deadline: float) -> pf.IntArray:
        n = challenge.n
        w = pf.weights(challenge.seed, n)
        out = np.empty((challenge.rounds, n), dtype=np.int64)
        for r in range(challenge.rounds):
            key = pf.a_key(challenge.seed, r)
            b = pf.pool_matrix(n, pf.pool_index(challenge.seed, r))
            for start in range(0, n, self.chunk_rows):
                if self.clock() > deadline:
                    raise ProofTimeout(f"stopped in round {r} of {challenge.rounds}")
                rows = np.arange(start, min(n, start + self.chunk_rows), dtype=np.int64)
                a = pf.block(key, rows, n).astype(np.float32)
                out[r, rows] = pf.fingerprints(a @ b, w)
        return out

    def hold_memory(self, seed: bytes, megabytes: int) -> MemoryHold:
        # Memory is asked of GPU claims only; a CPU prover has no GPU memory to hold.
        raise MemoryError("the CPU prover holds no GPU memory")


class TorchProver:
    """The same arithmetic on torch devices. With several GPUs, round r runs on
    GPU r mod G, all GPUs at once: a device claiming 8 GPUs must have 8 to keep
    up with the claimed throughput."""

    def __init__(
        self,
        devices: list[str],
        clock: Callable[[], float] = time.monotonic,
        holds_memory: bool = True,
    ) -> None:
        """``holds_memory=False`` refuses memory checks (a CPU has no GPU memory)."""
        import torch

        self.holds_memory = holds_memory
        self.torch: Any = torch
        self.devices = [torch.device(d) for d in devices]
        self.name = f"torch-{self.devices[0].type}"
        self.clock = clock
        self._pool: dict[tuple[str, int, int], Any] = {}
        if self.devices[0].type == "cuda":
            # Plain FP32, the rate the catalog's fp32_tflops states. TF32 would also
            # be exact here (see the module doc), only faster than the claim.
            torch.backends.cuda.matmul.allow_tf32 = False

    def block(self, key: tuple[int, int], rows: Any, n: int) -> Any:
        """``core.proof.block`` in torch (int64 on the rows' device)."""
        torch = self.torch
        a, b = key
        p = pf.P
        row_part = (a * ((rows * n) % p)) % p
        col_part = (a * torch.arange(n, dtype=torch.int64, device=rows.device) + b) % p
        x = row_part[:, None] + col_part[None, :]
        x -= p * (x >= p).to(torch.int64)
        y = (x * x) >> 31
        return (((y & 255) * 5) >> 8) - 2

    def _b(self, device: Any, n: int, index: int) -> Any:
        key = (str(device), n, index)
        if key not in self._pool:
            rows = self.torch.arange(n, dtype=self.torch.int64, device=device)
            self._pool[key] = self.block(pf.b_key(n, index), rows, n).to(self.torch.float32)
        return self._pool[key]

    def _rounds(
        self, device: Any, challenge: pf.Challenge, rounds: range, deadline: float, out: pf.IntArray
    ) -> None:
        torch = self.torch
        n = challenge.n
        w = torch.from_numpy(pf.weights(challenge.seed, n)).to(device)
        rows = torch.arange(n, dtype=torch.int64, device=device)
        for r in rounds:
            if self.clock() > deadline:
                raise ProofTimeout(f"stopped at round {r} of {challenge.rounds}")
            a = self.block(pf.a_key(challenge.seed, r), rows, n).to(torch.float32)
            c = (a @ self._b(device, n, pf.pool_index(challenge.seed, r))).to(torch.int64)
            # Elementwise then sum: int64 matmul is not available on every device.
            out[r] = (((c * c) * w).sum(dim=1) % pf.P).cpu().numpy()

    def fingerprints(self, challenge: pf.Challenge, deadline: float) -> pf.IntArray:
        out = np.empty((challenge.rounds, challenge.n), dtype=np.int64)
        g = len(self.devices)
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
        return out

    def hold_memory(self, seed: bytes, megabytes: int) -> MemoryHold:
        """Fill ``megabytes`` on every device (raises MemoryError when one cannot)."""
        if not self.holds_memory:
            raise MemoryError("this prover holds no GPU memory")
        torch = self.torch
        held = []
        try:
            for device in self.devices:
                blocks = [
                    torch.from_numpy(pf.memory_block(seed, i)).to(device)
                    for i in range(pf.memory_blocks(megabytes))
                ]
                held.append(blocks)
        except torch.OutOfMemoryError as exc:
            raise MemoryError(str(exc)) from None
        return MemoryHold(lambda i: held[0][i].cpu().numpy().tobytes())


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
    """Memory the prover holds; answers probes from it."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read = read

    def answer(self, index: int, nonce: bytes) -> str:
        return pf.memory_answer(self.read(index), nonce)
