"""Proofs of compute through the API: honest devices pass and become ready; liars,
late answers, malformed reveals and replays fail with a reason; nothing crashes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from solders.keypair import Keypair

from idlegrid.catalog import load_catalog, parse_catalog
from idlegrid.core import proof
from idlegrid.core.proof_policy import ProofRules
from idlegrid.errors import ChallengeClosed, NotYourDevice, UnknownChallenge
from idlegrid.protocol import (
    CommitRequest,
    CommitResponse,
    DeviceStatus,
    OpeningWire,
    ProofStatus,
    ProofView,
    Readiness,
    RegisterRequest,
    RevealRequest,
)
from idlegrid.server.services.proofs import rules_from
from idlegrid.server.settings import ServerSettings
from idlegrid.worker.duties import prove_challenge
from idlegrid.worker.prover import NumpyProver, ProofTimeout, TorchProver
from tests.conftest import LiveClock, Network, cpu_hardware, gpu_hardware

DEFAULTS = ProofRules()

# A small GPU model, so GPU-shaped proofs (with memory probes) run on this CPU.
TEST_GPU = """
[[model]]
key = "test-gpu"
name = "Test GPU"
kind = "gpu"
vendor = "test"
vram_gb = 0.05
fp32_tflops = 0.002
tf32_tflops = 0.002
bf16_tflops = 0.002
multiplier = 1.0
multiplier_source = "test"
match = ['^test gpu$']
"""


@pytest.fixture
def live(database_url: str, tmp_path: Path) -> Iterator[Network]:
    """A control plane on real time (proof timings are measured), small proofs (which
    run far below peak, hence the low efficiency floor)."""
    settings = ServerSettings(
        database_url=database_url,
        data_dir=tmp_path,
        heartbeat_interval_s=10,
        min_uptime_s=0,
        proof_target_s=0.005,
        proof_allowance_s=10.0,  # generous: CI machines are busy
        proof_n=256,
        proof_memory_fraction=0.5,
        proof_retry_s=0.001,
        proof_min_efficiency=0.001,
        proof_gpu_min_efficiency=0.001,
    )
    catalog = parse_catalog(TEST_GPU + "\n" + _xeon_and_4090())
    net = Network(settings, LiveClock(), catalog)
    yield net
    net.close()


def _xeon_and_4090() -> str:
    """The real catalog's entries for this machine's CPU and an RTX 4090, as TOML."""
    text = (Path(proof.__file__).parents[1] / "catalog" / "hardware.toml").read_text()
    tables = text.split("[[model]]")
    keep = [t for t in tables if 'key = "cpu-intel-xeon"' in t or 'key = "rtx-4090"' in t]
    assert len(keep) == 2
    return "".join("[[model]]" + t for t in keep)


def join(net: Network, hardware=None) -> tuple[Keypair, str]:  # type: ignore[no-untyped-def]
    kp = Keypair()
    net.client(kp).register_device(RegisterRequest(hardware=hardware or cpu_hardware()))
    net.state.proofs.tick()
    device = str(kp.pubkey())
    challenge = net.client(kp).heartbeat(device).challenge_id
    assert challenge is not None, "a new supported device is challenged at once"
    return kp, challenge


def test_the_servers_defaults_are_the_published_rules() -> None:
    """What docs/proof-of-compute.md states: the kinds' floors, and 0.8 of the VRAM."""
    fields = ServerSettings.model_fields  # the defaults, whatever this environment sets
    settings = ServerSettings.model_construct(**{k: f.default for k, f in fields.items()})
    assert rules_from(settings) == DEFAULTS
    assert (DEFAULTS.efficiency_floor("cpu"), DEFAULTS.efficiency_floor("apple")) == (0.2, 0.2)
    assert DEFAULTS.efficiency_floor("gpu") == 0.4
    assert settings.proof_memory_fraction == 0.8
    # 0.8 of a B200's memory is more than an H200 has (143,771 MiB over NVML).
    catalog = load_catalog()
    assert int(catalog.get("b200-sxm-180gb").vram_gb * 1024 * 0.8) > 143_771
    assert int(catalog.get("h200-sxm-141gb").vram_gb * 1024 * 0.8) < 143_771 - 20_000


def test_honest_cpu_device_passes_and_becomes_cluster_ready(live: Network) -> None:
    kp, challenge = join(live)
    device = str(kp.pubkey())
    result = prove_challenge(live.client(kp), device, challenge, NumpyProver())
    assert result.status is ProofStatus.VERIFIED, result.detail
    assert result.measured_tflops and result.measured_tflops > 0
    view = live.client().get_device(device)
    assert view.readiness is Readiness.CLUSTER_READY
    assert view.proof_passed_at is not None and view.measured_tflops == result.measured_tflops
    assert live.client(kp).heartbeat(device).challenge_id is None
    history = live.client().proofs(device).items
    assert [p.status for p in history] == [ProofStatus.VERIFIED]


def test_readiness_waits_for_the_minimum_uptime(live: Network) -> None:
    live.settings.min_uptime_s = 20
    kp, challenge = join(live)
    device = str(kp.pubkey())
    result = prove_challenge(live.client(kp), device, challenge, NumpyProver())
    assert result.status is ProofStatus.VERIFIED, result.detail
    assert live.client().get_device(device).readiness is Readiness.PENDING
    for _ in range(3):
        live.clock.advance(10)
        live.client(kp).heartbeat(device)
    live.tick()
    live.state.proofs.tick()
    view = live.client().get_device(device)
    assert view.uptime_s >= 20, view.uptime_s
    assert view.readiness is Readiness.CLUSTER_READY


def test_gpu_claim_with_memory_probes_passes_on_torch(live: Network) -> None:
    test_gpu = gpu_hardware("Test GPU", count=1, vram_mb=60)
    kp, challenge = join(live, test_gpu)
    device = str(kp.pubkey())
    result = prove_challenge(live.client(kp), device, challenge, TorchProver(["cpu"]))
    assert result.status is ProofStatus.VERIFIED, result.detail
    assert result.memory_mb == 25


def test_a_cpu_claiming_an_rtx_4090_fails(live: Network) -> None:
    live.settings.proof_n = 0  # the real size for a GPU claim
    live.state.proofs.rules = dataclasses.replace(
        live.state.proofs.rules, min_efficiency=0.2, gpu_min_efficiency=DEFAULTS.gpu_min_efficiency
    )
    kp, challenge = join(live, gpu_hardware("NVIDIA GeForce RTX 4090", count=1, vram_mb=24564))
    device = str(kp.pubkey())
    try:
        result = prove_challenge(live.client(kp), device, challenge, NumpyProver())
    except ProofTimeout:
        time.sleep(0.2)
        live.state.proofs.expire()
    else:
        assert result.status is ProofStatus.FAILED
    (view,) = live.client().proofs(device).items
    assert view.status is ProofStatus.FAILED and view.reason in ("timeout", "underperforms_claim")
    assert live.client().get_device(device).readiness is Readiness.PENDING


def forged_reveal(net: Network, kp: Keypair, challenge: str) -> ProofView:
    """Commit to fingerprints with one row forged in every leaf, then open honestly."""
    device = str(kp.pubkey())
    spec = net.client(kp).fetch_challenge(device, challenge)
    c = proof.Challenge(bytes.fromhex(spec.seed), spec.n, spec.rounds)
    _, fps = proof.prove(c)
    fps[:, :: proof.LEAF_ROWS] = (fps[:, :: proof.LEAF_ROWS] + 1) % proof.P
    fps[:, :] = (fps + 1) % proof.P  # every row wrong: any check catches it
    tree = proof.commit(c, fps)
    answer = net.client(kp).commit_challenge(
        device, challenge, CommitRequest(root=tree.root.hex(), prover="forger", elapsed_s=0.1)
    )
    assert isinstance(answer, CommitResponse)
    openings = [proof.open_check(c, tree, fps, r, i) for r, i in answer.checks]
    return net.client(kp).reveal_challenge(
        device,
        challenge,
        RevealRequest(
            openings=[
                OpeningWire(
                    round=o.round, row=o.row, leaf=list(o.leaf_fps), path=[h.hex() for h in o.path]
                )
                for o in openings
            ]
        ),
    )


def test_wrong_answers_fail_and_a_second_one_blocks_the_device(live: Network) -> None:
    kp, challenge = join(live)
    device = str(kp.pubkey())
    first = forged_reveal(live, kp, challenge)
    assert (first.status, first.reason) == (ProofStatus.FAILED, "wrong_answer")
    assert "fingerprint is wrong" in (first.detail or "")
    assert live.client().get_device(device).status is DeviceStatus.UP
    live.state.proofs.tick()  # the retry is due at once in these settings
    second = live.client(kp).heartbeat(device).challenge_id
    assert second is not None
    forged_reveal(live, kp, second)
    view = live.client().get_device(device)
    assert view.status is DeviceStatus.BLOCKED
    assert live.client(kp).heartbeat(device).status is DeviceStatus.BLOCKED
    live.state.proofs.tick()
    assert live.client(kp).heartbeat(device).challenge_id is None  # blocked: no more


def test_replays_and_steps_out_of_order_are_refused(live: Network) -> None:
    kp, challenge = join(live)
    device = str(kp.pubkey())
    client = live.client(kp)
    commit = CommitRequest(root="ab" * 32, prover="x", elapsed_s=0.0)
    with pytest.raises(ChallengeClosed):
        client.commit_challenge(device, challenge, commit)  # not fetched yet
    prove_challenge(client, device, challenge, NumpyProver())
    with pytest.raises(ChallengeClosed):
        client.fetch_challenge(device, challenge)
    with pytest.raises(ChallengeClosed):
        client.reveal_challenge(device, challenge, RevealRequest(openings=[]))
    (view,) = live.client().proofs(device).items
    assert view.status is ProofStatus.VERIFIED  # untouched by the replays


def test_another_devices_challenge_cannot_be_answered(live: Network) -> None:
    a, _ = join(live)
    b, b_challenge = join(live)
    with pytest.raises(UnknownChallenge):
        live.client(a).fetch_challenge(str(a.pubkey()), b_challenge)
    with pytest.raises(NotYourDevice):
        live.client(a).fetch_challenge(str(b.pubkey()), b_challenge)
    result = prove_challenge(live.client(b), str(b.pubkey()), b_challenge, NumpyProver())
    assert result.status is ProofStatus.VERIFIED


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda ops: ops[:-1], "expected"),
        (lambda ops: [o.model_copy(update={"path": ["zz"] * len(o.path)}) for o in ops], "hex"),
        (lambda ops: [o.model_copy(update={"path": o.path[:-1]}) for o in ops], "Merkle"),
        (lambda ops: [o.model_copy(update={"leaf": o.leaf[:3]}) for o in ops], "malformed"),
        (lambda ops: [ops[1], ops[0], *ops[2:]], "not ("),
    ],
)
def test_malformed_reveals_fail_with_a_reason(live: Network, mangle, expected: str) -> None:  # type: ignore[no-untyped-def]
    kp, challenge = join(live)
    device = str(kp.pubkey())
    client = live.client(kp)
    spec = client.fetch_challenge(device, challenge)
    c = proof.Challenge(bytes.fromhex(spec.seed), spec.n, spec.rounds)
    tree, fps = proof.prove(c)
    answer = client.commit_challenge(
        device, challenge, CommitRequest(root=tree.root.hex(), prover="t", elapsed_s=0.1)
    )
    assert isinstance(answer, CommitResponse)
    ops = [proof.open_check(c, tree, fps, r, i) for r, i in answer.checks]
    wire = [
        OpeningWire(round=o.round, row=o.row, leaf=list(o.leaf_fps), path=[h.hex() for h in o.path])
        for o in ops
    ]
    result = client.reveal_challenge(device, challenge, RevealRequest(openings=mangle(wire)))
    assert (result.status, result.reason) == (ProofStatus.FAILED, "wrong_answer")
    assert expected in (result.detail or "")


def test_late_commitment_and_unfetched_challenges_time_out(live: Network) -> None:
    kp, challenge = join(live)
    device = str(kp.pubkey())
    client = live.client(kp)
    spec = client.fetch_challenge(device, challenge)
    live.clock.advance(spec.deadline_s + 1)
    late = client.commit_challenge(
        device, challenge, CommitRequest(root="ab" * 32, prover="t", elapsed_s=0.1)
    )
    assert isinstance(late, ProofView) and late.reason == "timeout"
    live.state.proofs.tick()
    other = live.client(kp).heartbeat(device).challenge_id
    assert other is not None and other != challenge
    live.clock.advance(live.settings.proof_pickup_s + 1)
    live.state.proofs.expire()
    reasons = [(p.reason, p.detail) for p in live.client().proofs(device).items]
    assert reasons[0] == ("timeout", "not fetched in time")


def test_out_of_memory_and_wrong_memory_answers_fail(live: Network) -> None:
    kp, challenge = join(live, gpu_hardware("Test GPU", count=1, vram_mb=60))
    device = str(kp.pubkey())
    result = prove_challenge(live.client(kp), device, challenge, NumpyProver())
    assert (result.status, result.reason) == (ProofStatus.FAILED, "out_of_memory")
    live.state.proofs.tick()
    again = live.client(kp).heartbeat(device).challenge_id
    assert again is not None
    prover = TorchProver(["cpu"])
    original = prover.hold_memory
    prover.hold_memory = lambda seed, mb: original(b"another seed", mb)  # type: ignore[method-assign]
    result = prove_challenge(live.client(kp), device, again, prover)
    assert result.reason == "wrong_answer" and "memory probe" in (result.detail or "")


def test_repeated_failures_make_a_device_not_reward_ready(live: Network) -> None:
    kp, challenge = join(live)
    device = str(kp.pubkey())
    for _ in range(3):
        live.client(kp).fetch_challenge(device, challenge)
        live.clock.advance(3600)
        live.state.proofs.tick()  # expires it; the retry is due proof_retry_s later
        live.clock.advance(1)  # (a tick can come sooner than that 1 ms on a live clock)
        live.state.proofs.tick()
        challenge = live.client(kp).heartbeat(device).challenge_id or ""
    view = live.client().get_device(device)
    assert view.readiness is Readiness.NOT_REWARD_READY
    result = prove_challenge(live.client(kp), device, challenge, NumpyProver())
    assert result.status is ProofStatus.VERIFIED
    assert live.client().get_device(device).readiness is Readiness.CLUSTER_READY


def test_a_device_that_never_proves_itself_leaves_the_schedule(live: Network) -> None:
    kp, _ = join(live)
    device = str(kp.pubkey())
    give_up = live.settings.proof_give_up_after

    def failed() -> int:
        items = live.client().proofs(device).items
        return sum(1 for p in items if p.status is ProofStatus.FAILED)

    for _ in range(4 * give_up):  # it heartbeats, and never answers a challenge
        if failed() >= give_up:
            break
        live.clock.advance(3601)
        live.client(kp).heartbeat(device)
        live.state.proofs.tick()
    assert failed() == give_up
    for _ in range(3):  # however long it goes on heartbeating: no more challenges
        live.clock.advance(86_400)
        live.client(kp).heartbeat(device)
        live.state.proofs.tick()
        assert live.client(kp).heartbeat(device).challenge_id is None
    assert len(live.client().proofs(device).items) == give_up
    live.client(kp).register_device(RegisterRequest(hardware=cpu_hardware()))  # anew
    live.state.proofs.tick()
    challenge = live.client(kp).heartbeat(device).challenge_id or ""
    result = prove_challenge(live.client(kp), device, challenge, NumpyProver())
    assert result.status is ProofStatus.VERIFIED


def test_hired_devices_are_never_challenged(live: Network) -> None:
    kp = Keypair()
    live.client(kp).register_device(RegisterRequest(hardware=cpu_hardware()))
    from idlegrid.server.db.models import Device

    with live.state.devices.sessions.begin() as db:
        dev = db.get(Device, str(kp.pubkey()))
        assert dev is not None
        dev.readiness = Readiness.HIRED.value
    live.state.proofs.tick()
    assert live.client(kp).heartbeat(str(kp.pubkey())).challenge_id is None


def test_unsupported_devices_are_not_challenged(live: Network) -> None:
    kp = Keypair()
    live.client(kp).register_device(RegisterRequest(hardware=cpu_hardware("QEMU Virtual CPU")))
    live.state.proofs.tick()
    assert live.client(kp).heartbeat(str(kp.pubkey())).challenge_id is None


def test_the_real_catalog_plans_cpu_proofs_of_about_a_second() -> None:
    catalog = load_catalog()
    from idlegrid.protocol import Classification, DeviceKind

    cls = Classification(kind=DeviceKind.CPU, model="cpu-intel-xeon", processors=1)
    claimed = catalog.device_fp32_tflops(cls, cpu_hardware())
    c = proof.plan(b"s", "cpu", claimed, 1.0)
    assert c.n == 1024 and c.work_flop / (claimed * 1e12) == pytest.approx(1.0, rel=0.1)
