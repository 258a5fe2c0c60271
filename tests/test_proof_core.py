"""The proof-of-compute maths: exact generation, fingerprints, Merkle commitments,
spot checks, soundness; and the provers (numpy and torch agree bit for bit)."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idlegrid.core import proof
from idlegrid.core.proof_policy import FailReason, ProofRules, judge
from idlegrid.worker.prover import (
    NumpyProver,
    ProofTimeout,
    TorchProver,
)

SMALL = proof.Challenge(seed=b"\x07" * 32, n=128, rounds=3)


def honest(challenge: proof.Challenge = SMALL) -> tuple[proof.MerkleTree, proof.IntArray]:
    return proof.prove(challenge)


def openings(
    challenge: proof.Challenge,
    tree: proof.MerkleTree,
    fps: proof.IntArray,
    checks: list[tuple[int, int]],
) -> list[proof.Opening]:
    return [proof.open_check(challenge, tree, fps, r, i) for r, i in checks]


def test_elements_are_small_integers_and_products_exact() -> None:
    a = proof.matrix(proof.a_key(b"s", 0), 256)
    assert set(np.unique(a)) <= {-2, -1, 0, 1, 2}
    counts = np.bincount((a.ravel() + 2).astype(int))
    assert counts.min() > 0.18 * a.size  # each value about a fifth of the time
    b = proof.pool_matrix(256, 1)
    exact = a.astype(np.int64) @ b.astype(np.int64)
    assert np.array_equal((a @ b).astype(np.int64), exact)


def test_rows_can_be_generated_alone() -> None:
    key = proof.a_key(b"s", 3)
    full = proof.matrix(key, 64)
    assert np.array_equal(proof.a_rows(b"s", 3, 64, [5, 63, 0]), full[[5, 63, 0]])


def test_fresh_seeds_give_fresh_matrices() -> None:
    assert not np.array_equal(
        proof.matrix(proof.a_key(b"s", 0), 64), proof.matrix(proof.a_key(b"t", 0), 64)
    )
    assert not np.array_equal(
        proof.matrix(proof.a_key(b"s", 0), 64), proof.matrix(proof.a_key(b"s", 1), 64)
    )


@settings(max_examples=40, deadline=None)
@given(
    a=st.integers(1, proof.P - 1),
    b=st.integers(0, proof.P - 1),
    n=st.integers(1, 300),
    first=st.integers(0, 2**20),
    count=st.integers(1, 70),
)
def test_the_fast_generator_gives_the_definitions_values(
    a: int, b: int, n: int, first: int, count: int
) -> None:
    """block_f32 (what provers and matrix() use) equals block (the definition) for any
    key, size and rows, chunk boundaries included."""
    rows = np.arange(first, first + count, dtype=np.int64)
    assert np.array_equal(proof.block_f32((a, b), rows, n), proof.block((a, b), rows, n))


@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([1, 7, 1024, proof.MAX_N]), seed=st.binary(min_size=1, max_size=8))
def test_fingerprints_are_exact_at_the_bounds(n: int, seed: bytes) -> None:
    """The float64 fingerprints equal the int64 definition, with every product at its
    largest magnitude (±4n) and at random values, and the largest weights."""
    rng = np.random.default_rng(int.from_bytes(seed, "big"))
    w = proof.weights(seed, n)
    w[: max(1, n // 2)] = (1 << 20) - 1
    extreme = np.where(rng.random((2, n)) < 0.5, -4.0 * n, 4.0 * n).astype(np.float32)
    random = rng.integers(-4 * n, 4 * n + 1, size=(3, n)).astype(np.float32)
    for products in (extreme, random):
        c = products.astype(np.int64)
        assert np.array_equal(proof.fingerprints(products, w), ((c * c) @ w) % proof.P)


def test_fingerprint_is_not_linear() -> None:
    w = proof.weights(b"s", 4)
    x = np.array([[1.0, 2.0, 0.0, 1.0]])
    assert proof.fingerprints(2 * x, w)[0] != (2 * proof.fingerprints(x, w)[0]) % proof.P


def test_honest_prover_passes() -> None:
    tree, fps = honest()
    checks = proof.select_checks(SMALL, secrets.token_bytes(16))
    assert proof.verify(SMALL, tree.root, checks, openings(SMALL, tree, fps, checks)) is None


@pytest.mark.parametrize("leaves", [1, 2, 3, 5, 8, 13])
def test_merkle_paths_verify_for_every_leaf_and_nowhere_else(leaves: int) -> None:
    items = [bytes([i]) * 32 for i in range(leaves)]
    tree = proof.MerkleTree(items)
    for i, leaf in enumerate(items):
        assert proof.verify_path(leaf, i, tree.path(i), tree.root, leaves)
        if leaves > 1:
            assert not proof.verify_path(leaf, (i + 1) % leaves, tree.path(i), tree.root, leaves)
    assert not proof.verify_path(items[0], leaves, tree.path(0), tree.root, leaves)


def test_wrong_fingerprint_is_caught() -> None:
    _, fps = honest()
    checks = [(1, 10)]
    forged = fps.copy()
    forged[1, 10] += 1
    forged_tree = proof.commit(SMALL, forged)
    reason = proof.verify(
        SMALL, forged_tree.root, checks, openings(SMALL, forged_tree, forged, checks)
    )
    assert reason is not None and "fingerprint is wrong" in reason


def test_verify_many_judges_each_claim_as_verify_does() -> None:
    """A batch of honest, forged and malformed claims of two sizes: each verdict is
    the one ``verify`` gives alone, whatever else is in the batch."""
    claims: list[proof.Claim] = []
    for i, n in enumerate([128, 64, 128, 64, 128, 128]):
        challenge = proof.Challenge(bytes([i + 1]) * 32, n, 3)
        tree, fps = honest(challenge)
        checks = proof.select_checks(challenge, secrets.token_bytes(16), 12)
        if i in (1, 4):  # a wrong fingerprint, committed to
            fps = fps.copy()
            r, row = checks[5]
            fps[r, row] = (fps[r, row] + 1) % proof.P
            tree = proof.commit(challenge, fps)
        ops = openings(challenge, tree, fps, checks)
        if i == 2:
            ops = ops[:-1]  # an opening missing
        claims.append((challenge, tree.root, checks, ops))
    together = proof.verify_many(claims)
    alone = [proof.verify(*claim) for claim in claims]
    assert together == alone
    assert [v is None for v in together] == [True, False, False, True, False, True]
    assert "fingerprint is wrong" in (together[1] or "") and "openings" in (together[2] or "")
    assert proof.verify_many([]) == []


def test_wrong_path_or_answering_another_check_is_caught() -> None:
    tree, fps = honest()
    checks = [(0, 3), (2, 100)]
    ops = openings(SMALL, tree, fps, checks)
    bad_path = proof.Opening(0, 3, ops[0].leaf_fps, (b"\x00" * 32, *ops[0].path[1:]))
    assert "Merkle" in (proof.verify(SMALL, tree.root, checks, [bad_path, ops[1]]) or "")
    swapped = proof.verify(SMALL, tree.root, checks, [ops[1], ops[0]])
    assert swapped is not None and "not (0, 3)" in swapped
    assert proof.verify(SMALL, tree.root, checks, ops[:1]) is not None
    other_root = proof.prove(proof.Challenge(b"\x08" * 32, 128, 3))[0].root
    assert proof.verify(SMALL, other_root, checks, ops) is not None


def test_malformed_leaf_is_caught() -> None:
    tree, fps = honest()
    op = proof.open_check(SMALL, tree, fps, 0, 0)
    short = proof.Opening(0, 0, op.leaf_fps[:-1], op.path)
    huge = proof.Opening(0, 0, (proof.P, *op.leaf_fps[1:]), op.path)
    for bad in (short, huge):
        assert "malformed" in (proof.verify(SMALL, tree.root, [(0, 0)], [bad]) or "")


def test_a_prover_that_skipped_rows_is_caught_at_the_stated_rate() -> None:
    """Simulate a cheater that computed a fraction f of the rows (made-up fingerprints
    for the rest) against many fresh check draws; detection must match 1 − f^k."""
    challenge = proof.Challenge(seed=b"\x09" * 32, n=128, rounds=2)
    _, true_fps = proof.prove(challenge)
    rng = np.random.default_rng(0)
    f, k, trials = 0.9, 16, 300
    computed = rng.random(true_fps.shape) < f
    fake = np.where(computed, true_fps, rng.integers(0, proof.P, true_fps.shape))
    tree = proof.commit(challenge, fake)
    caught = 0
    for t in range(trials):
        checks = proof.select_checks(challenge, t.to_bytes(4, "big"), k)
        caught += (
            proof.verify(challenge, tree.root, checks, openings(challenge, tree, fake, checks))
            is not None
        )
    rate = caught / trials
    expected = 1 - computed.mean() ** k
    assert abs(rate - expected) < 0.08, (rate, expected)


def test_soundness_bound_and_default_checks() -> None:
    assert proof.pass_probability(0.9) < 0.01  # a 10% skipper is caught 99% of the time
    assert proof.checks_needed(0.9, 0.99) <= proof.DEFAULT_CHECKS
    assert proof.pass_probability(1.0) == 1.0
    with pytest.raises(ValueError):
        proof.checks_needed(1.0, 0.99)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=32), st.integers(1, 50))
def test_checks_are_in_range(entropy: bytes, k: int) -> None:
    checks = proof.select_checks(SMALL, entropy, k)
    assert len(checks) == k
    assert all(0 <= r < SMALL.rounds and 0 <= i < SMALL.n for r, i in checks)


def test_plan_scales_rounds_with_the_claim_and_deadline_with_slack() -> None:
    cpu = proof.plan(b"s", "cpu", claimed_tflops=0.1, target_s=1.0)
    h100 = proof.plan(b"s", "gpu", claimed_tflops=495, target_s=1.0)
    assert cpu.n == 1024 and 40 <= cpu.rounds <= 50
    assert h100.n == 4096 and h100.work_flop >= 495e12
    assert proof.deadline_s(cpu, 0.1, 0.25, 2.0) == pytest.approx(cpu.work_flop / 0.025e12 + 2)


def test_judge_holds_each_kind_to_its_floor() -> None:
    rules = ProofRules()
    # 0.3 of a 1 TFLOPS claim in 1 s: enough for a CPU (0.2), not for a GPU (0.4).
    reason, measured = judge(1.0, 10.0, 0.3e12, 1.0, rules, "cpu")
    assert reason is None and measured == pytest.approx(0.3)
    assert judge(1.0, 10.0, 0.3e12, 1.0, rules, "apple")[0] is None
    assert judge(1.0, 10.0, 0.3e12, 1.0, rules, "gpu")[0] is FailReason.UNDERPERFORMS_CLAIM
    assert judge(1.0, 10.0, 0.5e12, 1.0, rules, "gpu")[0] is None
    assert judge(11.0, 10.0, 9e12, 1.0, rules, "gpu")[0] is FailReason.TIMEOUT


def test_numpy_and_torch_provers_agree_bit_for_bit() -> None:
    challenge = proof.Challenge(seed=secrets.token_bytes(32), n=256, rounds=3)
    far = float("inf")
    by_numpy = NumpyProver().fingerprints(challenge, far)
    by_torch = TorchProver(["cpu"]).fingerprints(challenge, far)
    assert np.array_equal(by_numpy, by_torch)
    assert np.array_equal(by_numpy, proof.prove(challenge)[1])
    # Two "devices" (both the CPU here) split the rounds and still agree.
    assert np.array_equal(TorchProver(["cpu", "cpu"]).fingerprints(challenge, far), by_numpy)


def test_prover_stops_at_the_deadline() -> None:
    ticks = iter(range(100))
    prover = NumpyProver(clock=lambda: float(next(ticks)))
    with pytest.raises(ProofTimeout):
        prover.fingerprints(proof.Challenge(b"s", 64, 10), deadline=2.5)


def test_numpy_prover_in_chunks_matches_the_reference() -> None:
    challenge = proof.Challenge(seed=b"c" * 32, n=256, rounds=2)
    prover = NumpyProver()
    prover.chunk_rows = 100  # uneven chunks
    assert np.array_equal(prover.fingerprints(challenge, float("inf")), proof.prove(challenge)[1])


def test_fast_torch_path_matches_numpy_bit_for_bit() -> None:
    """The CUDA path (generation in place with a value table, float64 fingerprints),
    run on the CPU: the same matrices and fingerprints as core.proof."""
    prover = TorchProver(["cpu"], fast=True)
    cpu = prover.devices[0]
    for key in (proof.a_key(b"s", 3), proof.b_key(192, 1), (proof.P - 1, proof.P - 1), (1, 1)):
        assert np.array_equal(prover.matrix(key, 192, cpu).numpy(), proof.matrix(key, 192))
    challenge = proof.Challenge(seed=secrets.token_bytes(32), n=256, rounds=3)
    assert np.array_equal(prover.fingerprints(challenge, float("inf")), proof.prove(challenge)[1])


def test_fast_fingerprints_are_exact_at_the_largest_products() -> None:
    """|c| = 4n at n = MAX_N: the float64 sums are at their 2⁵³ limit and still exact."""
    import torch

    prover = TorchProver(["cpu"], fast=True)
    n = proof.MAX_N
    c = torch.full((4, n), 4.0 * n)
    c[1] = -4.0 * n
    c[2, ::2] = 4.0 * n - 1
    c[3] = torch.arange(n) % 9 - 4.0
    w = prover.weights(b"w", n, prover.devices[0])
    by_torch = prover.row_fingerprints(c, w).numpy()
    assert np.array_equal(by_torch, proof.fingerprints(c.numpy(), proof.weights(b"w", n)))


def test_memory_keys_are_the_blocks_keys() -> None:
    keys = proof.memory_keys(b"seed", 7, 300)
    assert keys.shape == (300, 2)
    assert [tuple(k) for k in keys] == [proof._key(b"M", b"seed", i) for i in range(7, 307)]


@pytest.mark.parametrize("fast", [True, False])
def test_device_generated_memory_equals_memory_block_bit_for_bit(fast: bool) -> None:
    """TorchProver.fill (torch's int64 arithmetic where fast, numpy's blocks copied
    otherwise) holds exactly proof.memory_block's words, across segment, batch and chunk
    boundaries."""
    prover = TorchProver(["cpu"], fast=fast)
    prover.segment_blocks, prover.fill_batch_blocks, prover.fill_chunk_blocks = 4, 8, 3
    held = prover.fill(b"fill seed", 11)
    assert [len(s) for s in held[0]] == [4, 4, 3]
    for i in range(11):
        words = held[0][i // 4][i % 4].numpy()
        assert words.dtype == np.int64 and np.array_equal(
            words, proof.memory_block(b"fill seed", i)
        )


def test_warm_up_prepares_the_pool_without_a_seed() -> None:
    prover = TorchProver(["cpu"], fast=True)
    prover.warm_up(128)
    assert len(prover._pool) == proof.POOL_SIZE
    NumpyProver().warm_up(128)


def test_memory_hold_answers_probes() -> None:
    for fast in (False, True):
        hold = TorchProver(["cpu"], fast=fast).hold_memory(b"seed", 3)
        nonce = b"n" * 16
        for i in range(3):
            expected = proof.memory_answer(proof.memory_block(b"seed", i).tobytes(), nonce)
            assert hold.answer(i, nonce) == expected
        hold.release()
    with pytest.raises(MemoryError):
        NumpyProver().hold_memory(b"seed", 1)
    with pytest.raises(MemoryError):
        TorchProver(["cpu"], holds_memory=False).hold_memory(b"seed", 1)


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (runs where present)"
)
def test_cuda_prover_matches_numpy_and_reports_throughput() -> None:
    import time

    challenge = proof.Challenge(seed=secrets.token_bytes(32), n=4096, rounds=64)
    prover = TorchProver(["cuda:0"])
    prover.fingerprints(proof.Challenge(challenge.seed, 4096, 1), float("inf"))  # warm up
    start = time.perf_counter()
    by_cuda = prover.fingerprints(challenge, float("inf"))
    elapsed = time.perf_counter() - start
    print(f"CUDA prover: {challenge.work_flop / elapsed / 1e12:.1f} TFLOPS")
    small = proof.Challenge(challenge.seed, 4096, 2)
    assert np.array_equal(by_cuda[:2], NumpyProver().fingerprints(small, float("inf")))


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (runs where present)"
)
def test_cuda_memory_fill_matches_memory_block() -> None:
    import torch

    prover = TorchProver(["cuda:0"])
    held = prover.fill(b"cuda seed", 2100)  # three segments, the last one partial
    for i in (0, 1023, 1024, 2047, 2048, 2099):
        words = held[0][i // 1024][i % 1024].cpu().numpy()
        assert np.array_equal(words, proof.memory_block(b"cuda seed", i)), i
    del held
    torch.cuda.empty_cache()
