"""Proof of compute: the published protocol and its maths. Pure: numpy only, no I/O.

A device proves that it really multiplies matrices at the rate its claimed model
can, and the verifier checks it at a tiny fraction of the prover's cost.

Protocol (one challenge)::

    verifier                                   prover
    seed, n, rounds, deadline ───────────────▶
                                               for r in rounds: C_r = A_r · B_r
                                               fingerprint every row of every C_r
                                 ◀──────────── Merkle root over the fingerprints
    k random (round, row) checks ────────────▶   (drawn after the commitment)
                                 ◀──────────── the fingerprints' leaves + Merkle paths
    recompute those k rows: O(k · n²)

Matrices. ``A_r`` is fresh for every round of every challenge (from its secret
seed); ``B_r`` is
drawn from a public pool of ``POOL_SIZE`` matrices per size, which the verifier
keeps generated: generating a matrix costs O(n²), n times a row check, so a
fresh B would make the verifier's work as large as generating it.
Knowing B in advance does not help a prover: every product row depends on a
row of a fresh A. Elements come from an affine map modulo the prime
p = 2³¹ − 1 followed by a square, reduced to [−2, 2] (``block``); numpy and torch compute
the same integers, and every product entry is an integer of magnitude at most
4n, exact in float32 (and in TF32 or bf16-input/fp32-accumulate arithmetic),
so CPUs and GPUs agree bit for bit.

Fingerprints. Row i of C_r is reduced to Σ_j w_j · c_j² mod p with weights
w in [1, 2²⁰) from the seed. The square makes it non-linear: a linear fingerprint
Σ_j w_j c_j equals A_row · (B w) and could be had without the product.

Soundness. A prover that computed only a fraction f of the rows must commit to
made-up fingerprints for the rest; a made-up one matches with probability 1/p.
With k checks drawn uniformly (with replacement) after the commitment, it
passes with probability at most f^k + k/p (``pass_probability``). The default
k = 48 catches a prover that skipped 10% of the rows with probability
1 − 0.9⁴⁸ > 99.3%.

Commitment. Fingerprints are grouped ``LEAF_ROWS`` rows to a leaf, leaves are
hashed with SHA-256 into a Merkle tree; a check reveals its row's leaf (all
``LEAF_ROWS`` fingerprints) and the leaf's path.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

P = 2**31 - 1
POOL_SEED = b"idlegrid-pool-v1"
POOL_SIZE = 4
LEAF_ROWS = 64
DEFAULT_CHECKS = 48

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


# -- element generation --------------------------------------------------------------


def _key(*parts: bytes | str | int) -> tuple[int, int]:
    """Two affine coefficients in [1, p) derived from ``parts``."""
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        h.update(len(data).to_bytes(4, "big") + data)
    digest = h.digest()
    a = int.from_bytes(digest[:8], "big") % (P - 1) + 1
    b = int.from_bytes(digest[8:16], "big") % (P - 1) + 1
    return a, b


def block(key: tuple[int, int], rows: IntArray, n: int) -> IntArray:
    """Rows ``rows`` of the n × n matrix named by ``key``; elements in [−2, 2].

    Element (i, j) is built from its index t = i·n + j::

        x = (a·t + b) mod p            the affine map, as a row part plus a column part
        y = (x · x) >> 31              the high half of the square: non-linear
        v = ((y & 255) · 5 >> 8) − 2   reduced to [−2, 2]

    Every intermediate is below 2⁶³, and torch's int64 arithmetic gives the same
    values (``worker/prover.py``). Cost: a handful of vector operations per element.
    """
    a, b = key
    row_part = (a * ((rows.astype(np.int64) * n) % P)) % P
    col_part = (a * np.arange(n, dtype=np.int64) + b) % P
    x = row_part[:, None] + col_part[None, :]
    x -= P * (x >= P)
    y = (x * x) >> 31
    result: IntArray = (((y & 255) * 5) >> 8) - 2
    return result


_VALUES = ((np.arange(256, dtype=np.int64) * 5 >> 8) - 2).astype(np.float32)  # v of y & 255
_CHUNK_ROWS = 32  # 32 × n uint64 temporaries stay in a core's cache for n ≤ 4096


def block_f32(key: tuple[int, int], rows: IntArray, n: int) -> FloatArray:
    """``block(key, rows, n)`` as float32, the same values, about three times faster:
    in place on cache-sized row chunks, the reduction mod p as a wrapped unsigned
    subtraction and a minimum, and the last three steps as one table lookup. (``block``
    stays the definition, the one the verifier and the torch prover follow.)"""
    a, b = key
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), n), dtype=np.float32)
    col = ((a * np.arange(n, dtype=np.int64) + b) % P).astype(np.uint64)
    row = ((a * ((rows * n) % P)) % P).astype(np.uint64)
    x = np.empty((min(_CHUNK_ROWS, len(rows)), n), dtype=np.uint64)
    y = np.empty_like(x)
    for start in range(0, len(rows), _CHUNK_ROWS):
        stop = min(len(rows), start + _CHUNK_ROWS)
        xv, yv = x[: stop - start], y[: stop - start]
        np.add(row[start:stop, None], col[None, :], out=xv)  # below 2p
        np.subtract(xv, np.uint64(P), out=yv)  # wraps to above 2⁶³ where xv < p
        np.minimum(xv, yv, out=xv)  # x mod p
        np.multiply(xv, xv, out=xv)  # below 2⁶²
        np.right_shift(xv, np.uint64(31), out=xv)
        np.bitwise_and(xv, np.uint64(255), out=xv)
        np.take(_VALUES, xv, out=out[start:stop])
    return out


def a_key(seed: bytes, round_: int) -> tuple[int, int]:
    return _key(b"A", seed, round_)


def b_key(n: int, index: int) -> tuple[int, int]:
    return _key(b"B", POOL_SEED, n, index)


def weights(seed: bytes, n: int) -> IntArray:
    """Fingerprint weights in [1, 2²⁰): small enough that Σ w·c² fits in int64."""
    a, b = _key(b"W", seed)
    idx = np.arange(n, dtype=np.int64)
    result: IntArray = (((a * idx + b) % P) & 0xFFFFF) | 1
    return result


def pool_index(seed: bytes, round_: int) -> int:
    """Which public B a round uses."""
    digest = hashlib.sha256(b"pool" + seed + round_.to_bytes(4, "big")).digest()
    return int.from_bytes(digest[:4], "big") % POOL_SIZE


def matrix(key: tuple[int, int], n: int) -> FloatArray:
    """The whole matrix (``block_f32`` of every row)."""
    return block_f32(key, np.arange(n, dtype=np.int64), n)


_pool_lock = threading.Lock()


@lru_cache(maxsize=3 * POOL_SIZE)  # the pools of three sizes: CPU, Apple and GPU
def _pool_matrix(n: int, index: int) -> FloatArray:
    b = matrix(b_key(n, index), n)
    b.setflags(write=False)
    return b


def pool_matrix(n: int, index: int) -> FloatArray:
    """A public B, generated once per process and kept (the verifier's cache)."""
    with _pool_lock:  # two verifiers must not both generate the same B
        return _pool_matrix(n, index)


def clear_pool() -> None:
    """Forget the generated pool (benchmarks time a cold verifier with it)."""
    with _pool_lock:
        _pool_matrix.cache_clear()


def a_rows(seed: bytes, round_: int, n: int, rows: list[int]) -> FloatArray:
    """Just the named rows of A_r: O(n) each."""
    return block(a_key(seed, round_), np.array(rows, dtype=np.int64), n).astype(np.float32)


# -- fingerprints and commitment --------------------------------------------------------


MAX_N = 8192  # |c| ≤ 4n, so c²·w·n < 2⁶³ up to here


def fingerprints(products: npt.NDArray[np.floating], w: IntArray) -> IntArray:
    """Row fingerprints of a (rows × n) block of products: Σ_j w_j · c_j² mod p.

    Computed exactly in float64, as one matrix product (BLAS) rather than an int64
    one: c² ≤ (4n)² ≤ 2³⁰ is exact, and with w split as w_hi · 2¹⁰ + w_lo (each
    below 2¹⁰) every partial sum of Σ c² · w_half stays below n · 2⁴⁰ ≤ 2⁵³, where
    float64 holds every integer, in any order of summation."""
    halves = np.stack([w >> 10, w & 1023], axis=1).astype(np.float64)
    c2 = products.astype(np.float64)  # exact: the products are integers
    np.multiply(c2, c2, out=c2)
    hi_lo = (c2 @ halves).astype(np.int64)
    result: IntArray = ((hi_lo[:, 0] << 10) + hi_lo[:, 1]) % P
    return result


def leaf_hash(round_: int, leaf: int, fps: IntArray) -> bytes:
    header = round_.to_bytes(4, "big") + leaf.to_bytes(4, "big")
    return hashlib.sha256(b"\x00" + header + fps.astype("<i8").tobytes()).digest()


def _merkle_parent(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleTree:
    """A SHA-256 Merkle tree; odd nodes are paired with themselves."""

    def __init__(self, leaves: list[bytes]) -> None:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        self.levels = [leaves]
        while len(self.levels[-1]) > 1:
            level = self.levels[-1]
            self.levels.append(
                [
                    _merkle_parent(level[i], level[min(i + 1, len(level) - 1)])
                    for i in range(0, len(level), 2)
                ]
            )

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def path(self, index: int) -> list[bytes]:
        out = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            out.append(level[min(sibling, len(level) - 1)])
            index //= 2
        return out


def verify_path(leaf: bytes, index: int, path: list[bytes], root: bytes, leaves: int) -> bool:
    """Whether ``leaf`` sits at ``index`` of a tree of ``leaves`` leaves with ``root``."""
    if not 0 <= index < leaves or len(path) != tree_depth(leaves):
        return False
    node, width = leaf, leaves
    for sibling in path:
        if index % 2 == 0 and index == width - 1:
            expected_sibling = node  # an odd node paired with itself
            if sibling != expected_sibling:
                return False
        node = _merkle_parent(node, sibling) if index % 2 == 0 else _merkle_parent(sibling, node)
        index //= 2
        width = (width + 1) // 2
    return node == root


def tree_depth(leaves: int) -> int:
    return 0 if leaves <= 1 else math.ceil(math.log2(leaves))


# -- the challenge ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """What the verifier sends. ``seed`` is secret until the challenge is fetched."""

    seed: bytes
    n: int
    rounds: int

    @property
    def leaves_per_round(self) -> int:
        return self.n // LEAF_ROWS

    @property
    def leaves(self) -> int:
        return self.rounds * self.leaves_per_round

    @property
    def work_flop(self) -> float:
        return 2.0 * self.n**3 * self.rounds


def size_for(kind: str) -> int:
    """Matrix size by device kind: large enough to run near peak on that kind."""
    # Per round, generating A and fingerprinting C cost O(n²) against the product's
    # O(n³): n must be large enough on fast devices for the product to dominate.
    # 4096 for GPUs: at 8192 the verifier's k row products (k·n²) would cost more
    # than 36 ms of a core, the budget for 100,000 devices an hour.
    return {"gpu": 4096, "apple": 2048}.get(kind, 1024)


def plan(
    seed: bytes,
    kind: str,
    claimed_tflops: float,
    target_s: float,
    max_rounds: int = 4096,
    n: int = 0,
) -> Challenge:
    """A challenge that takes about ``target_s`` at the claimed throughput
    (``n`` 0 means the size for the kind)."""
    n = n or size_for(kind)
    if not LEAF_ROWS <= n <= MAX_N or n % LEAF_ROWS:
        raise ValueError(f"n must be a multiple of {LEAF_ROWS} up to {MAX_N}")
    per_round = 2.0 * n**3
    rounds = max(1, min(max_rounds, math.ceil(claimed_tflops * 1e12 * target_s / per_round)))
    return Challenge(seed=seed, n=n, rounds=rounds)


def deadline_s(
    challenge: Challenge, claimed_tflops: float, min_efficiency: float, allowance_s: float
) -> float:
    """Seconds from fetch to commitment: the claimed time at ``min_efficiency``, plus
    an allowance for latency and start-up."""
    return challenge.work_flop / (claimed_tflops * 1e12 * min_efficiency) + allowance_s


def prove(challenge: Challenge) -> tuple[MerkleTree, IntArray]:
    """The reference prover (numpy): the tree and every row's fingerprint (rounds × n)."""
    w = weights(challenge.seed, challenge.n)
    fps = np.empty((challenge.rounds, challenge.n), dtype=np.int64)
    for r in range(challenge.rounds):
        a = matrix(a_key(challenge.seed, r), challenge.n)
        b = pool_matrix(challenge.n, pool_index(challenge.seed, r))
        fps[r] = fingerprints(a @ b, w)
    return commit(challenge, fps), fps


def commit(challenge: Challenge, fps: IntArray) -> MerkleTree:
    """The Merkle tree over a full (rounds × n) fingerprint table."""
    per = challenge.leaves_per_round
    leaves = [
        leaf_hash(r, j, fps[r, j * LEAF_ROWS : (j + 1) * LEAF_ROWS])
        for r in range(challenge.rounds)
        for j in range(per)
    ]
    return MerkleTree(leaves)


def select_checks(
    challenge: Challenge, entropy: bytes, k: int = DEFAULT_CHECKS
) -> list[tuple[int, int]]:
    """k (round, row) pairs, uniform with replacement, from the verifier's ``entropy``
    (fresh randomness drawn after the commitment: never derived from the root,
    which a prover could grind)."""
    out = []
    total = challenge.rounds * challenge.n
    for i in range(k):
        digest = hashlib.sha256(entropy + i.to_bytes(4, "big")).digest()
        pick = int.from_bytes(digest[:8], "big") % total
        out.append(divmod(pick, challenge.n))
    return out


@dataclass(frozen=True, slots=True)
class Opening:
    """The prover's answer to one check: the leaf holding the row, and its path."""

    round: int
    row: int
    leaf_fps: tuple[int, ...]
    path: tuple[bytes, ...]


def open_check(
    challenge: Challenge, tree: MerkleTree, fps: IntArray, round_: int, row: int
) -> Opening:
    leaf = row // LEAF_ROWS
    index = round_ * challenge.leaves_per_round + leaf
    block = fps[round_, leaf * LEAF_ROWS : (leaf + 1) * LEAF_ROWS]
    return Opening(round_, row, tuple(int(x) for x in block), tuple(tree.path(index)))


def verify(
    challenge: Challenge,
    root: bytes,
    checks: list[tuple[int, int]],
    openings: list[Opening],
) -> str | None:
    """None when every opening proves its check; otherwise what was wrong."""
    (problem,) = verify_many([(challenge, root, checks, openings)])
    return problem


Claim = tuple[Challenge, bytes, list[tuple[int, int]], list[Opening]]
"""What ``verify`` takes: a challenge, the committed root, the checks and the openings."""


def verify_many(claims: Sequence[Claim]) -> list[str | None]:
    """``verify`` for many challenges at once, each judged on its own.

    The openings and Merkle paths are checked per challenge; the arithmetic is
    batched: one product per public B (per size) for the checked rows of every
    challenge that uses it. At the GPU size the verifier's cost is reading each
    4096 × 4096 B, so a batch reads it once for all its challenges instead of once
    each (``benchmarks/proof.py`` measures the difference). Row products of small
    integers are exact in float32 whatever the batch, so the verdicts do not
    depend on it."""
    problems: list[str | None] = [None] * len(claims)
    # (n, pool) -> [(claim, check index, round, row, claimed fingerprint)]
    groups: dict[tuple[int, int], list[tuple[int, int, int, int, int]]] = {}
    for c, (challenge, root, checks, openings) in enumerate(claims):
        rows, problems[c] = _opened_rows(challenge, root, checks, openings)
        for pool, entry in rows:
            groups.setdefault((challenge.n, pool), []).append((c, *entry))
    wrong: dict[int, tuple[int, int, int]] = {}  # claim -> the first wrong (check, round, row)
    for (n, pool), entries in groups.items():
        live = [e for e in entries if problems[e[0]] is None]
        if not live:
            continue
        a = np.concatenate([a_rows(claims[c][0].seed, r, n, [row]) for c, _, r, row, _ in live])
        products = a @ pool_matrix(n, pool)
        by_claim: dict[int, list[int]] = {}
        for position, (c, *_rest) in enumerate(live):
            by_claim.setdefault(c, []).append(position)
        for c, positions in by_claim.items():
            actual = fingerprints(products[positions], weights(claims[c][0].seed, n))
            for position, true_fp in zip(positions, actual, strict=True):
                _, i, r, row, fp = live[position]
                if fp != int(true_fp) and (c not in wrong or i < wrong[c][0]):
                    wrong[c] = (i, r, row)
    for c, (_, r, row) in wrong.items():
        problems[c] = f"round {r} row {row}: the fingerprint is wrong"
    return problems


def _opened_rows(
    challenge: Challenge, root: bytes, checks: list[tuple[int, int]], openings: list[Opening]
) -> tuple[list[tuple[int, tuple[int, int, int, int]]], str | None]:
    """The structural half of ``verify``: each opening answers its check, is well
    formed and leads to the root. Returns [(pool, (check index, round, row, claimed
    fingerprint))] for the arithmetic, or what was wrong."""
    if len(openings) != len(checks):
        return [], f"expected {len(checks)} openings, got {len(openings)}"
    rows = []
    for i, ((round_, row), op) in enumerate(zip(checks, openings, strict=True)):
        if (op.round, op.row) != (round_, row):
            return [], f"opening {i} answers ({op.round}, {op.row}), not ({round_}, {row})"
        if len(op.leaf_fps) != LEAF_ROWS or any(not 0 <= x < P for x in op.leaf_fps):
            return [], f"opening {i} has a malformed leaf"
        leaf = row // LEAF_ROWS
        fps = np.array(op.leaf_fps, dtype=np.int64)
        digest = leaf_hash(round_, leaf, fps)
        index = round_ * challenge.leaves_per_round + leaf
        if not verify_path(digest, index, list(op.path), root, challenge.leaves):
            return [], f"opening {i}: the Merkle path does not lead to the root"
        claimed = int(fps[row % LEAF_ROWS])
        rows.append((pool_index(challenge.seed, round_), (i, round_, row, claimed)))
    return rows, None


# -- soundness --------------------------------------------------------------------------


def pass_probability(f: float, k: int = DEFAULT_CHECKS) -> float:
    """Upper bound on the chance a prover that computed a fraction ``f`` of the rows passes."""
    return min(1.0, f**k + k / P)


def checks_needed(f: float, detection: float) -> int:
    """The fewest checks that catch a prover computing fraction ``f`` with probability
    at least ``detection`` (ignoring the 1/p guessing term)."""
    if not 0 < f < 1:
        raise ValueError("f must be in (0, 1)")
    return math.ceil(math.log(1 - detection) / math.log(f))


# -- memory ------------------------------------------------------------------------------

MEMORY_BLOCK_MB = 1


def memory_blocks(megabytes: int) -> int:
    return max(1, megabytes // MEMORY_BLOCK_MB)


MEMORY_WORDS = MEMORY_BLOCK_MB * 1024 * 1024 // 8  # int64 words per block


def memory_block(seed: bytes, index: int) -> IntArray:
    """Block ``index`` of the seed-derived memory image the prover holds: word t is
    (a·t + b) mod p, with (a, b) = ``_key(b"M", seed, index)``. Every value is below
    2⁴⁹ before the reduction, so torch's int64 arithmetic gives the same words on any
    device (``TorchProver.fill``)."""
    a, b = _key(b"M", seed, index)
    idx = np.arange(MEMORY_WORDS, dtype=np.int64)
    result: IntArray = ((a * idx + b) % P).astype("<i8")
    return result


def memory_keys(seed: bytes, start: int, count: int) -> IntArray:
    """The coefficients (a, b) of blocks ``start`` … ``start + count − 1`` as a
    (count × 2) int64 array: ``_key(b"M", seed, i)`` for each, with the common prefix
    hashed once and the digests parsed together (about 0.6 µs a block, against 1.4 µs
    through ``_key``: a prover filling 100 GiB derives 100,000 keys)."""
    prefix = hashlib.sha256()
    for part in (b"M", seed):
        prefix.update(len(part).to_bytes(4, "big") + part)
    digests = bytearray()
    for i in range(start, start + count):
        data = str(i).encode()
        h = prefix.copy()
        h.update(len(data).to_bytes(4, "big") + data)
        digests += h.digest()[:16]
    words = np.frombuffer(bytes(digests), dtype=">u8").reshape(count, 2)
    result: IntArray = (words % np.uint64(P - 1) + np.uint64(1)).astype(np.int64)
    return result


def memory_answer(block: bytes, nonce: bytes) -> str:
    """What a probe asks for: SHA-256 over the nonce and the block's bytes."""
    return hashlib.sha256(nonce + block).hexdigest()
