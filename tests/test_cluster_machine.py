"""The cluster machine (``core/cluster_machine.py``) as event tables: each test feeds
events and asserts the exact instructions, with no database, sockets or sleeps, and
the state's invariants are checked after every step. A hypothesis test runs random
event sequences over a shared pool of devices: no device is ever in two clusters, a
node is paid only for time it served, and every unit prepaid is charged, refunded or
still in escrow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idlegrid.core.cluster_machine import (
    AddNode,
    ClusterMachine,
    ClusterState,
    Event,
    Extended,
    HeadAddress,
    Instruction,
    Node,
    NodeReported,
    NodeRole,
    NodeState,
    NoReplacement,
    PayNode,
    Reform,
    RefundRest,
    RefundSlot,
    Release,
    ReplacementFound,
    Reserve,
    SetStatus,
    Settle,
    TakeBuyerFee,
    TakePayment,
    Terminated,
    Tick,
    ms,
    problems,
)
from idlegrid.core.clusters import ClusterStatus, gross, prepayment, slot_refund
from idlegrid.core.fees import fee
from idlegrid.errors import ClusterNotActive

S = ClusterStatus
PRICE = 3_600_000  # IO units per device-hour: 1,000 units a second
HOURS = 2
T0 = 1_000.0
TIMEOUT = 180.0
HEAD_ADDRESS = HeadAddress("10.0.0.1", 6379, 8265, 10001)


def cluster(devices: int = 2, hours: int = HOURS) -> ClusterMachine:
    """A cluster just deployed: paid for, its devices reserved, nothing started."""
    pay = prepayment(PRICE, devices, hours, "IO")
    nodes = [
        Node(f"d{i}", f"owner{i}", NodeRole.HEAD if i == 0 else NodeRole.WORKER, 0, assigned_at=T0)
        for i in range(devices)
    ]
    state = ClusterState(
        id="c",
        status=S.DEPLOYMENT_REQUESTED,
        currency="IO",
        price=PRICE,
        quantity=devices,
        hours=hours,
        paid=pay.total,
        head_device="d0",
        deploy_deadline=T0 + TIMEOUT,
        nodes=nodes,
    )
    return ClusterMachine(state, deploy_timeout_s=TIMEOUT)


def step(m: ClusterMachine, *events: Event) -> list[Instruction]:
    out = m.handle(*events)
    assert problems(m.state) == []
    return out


def up(device: str, at: float, generation: int = 0) -> NodeReported:
    head = HEAD_ADDRESS if device == "d0" or generation else None
    return NodeReported(device, generation, NodeState.UP, at, head=head)


def running(devices: int = 2) -> ClusterMachine:
    m = cluster(devices)
    step(m, *(up(f"d{i}", T0 + 10) for i in range(devices)))
    assert m.state.status is S.RUNNING
    return m


def slice_of(seconds: float) -> tuple[int, int, int]:
    earned = gross(PRICE, 0, ms(seconds))
    return earned, earned - fee(earned, "IO"), fee(earned, "IO")


def alive(*devices: str) -> frozenset[str]:
    return frozenset(devices)


# -- forming ----------------------------------------------------------------------------------


def test_forming_to_running() -> None:
    m = cluster()
    starting = NodeReported("d0", 0, NodeState.STARTING, T0 + 2, head=HEAD_ADDRESS)
    assert step(m, starting) == [SetStatus(S.DEPLOYING)]
    assert m.state.head == HEAD_ADDRESS  # workers may start now
    assert step(m, NodeReported("d1", 0, NodeState.STARTING, T0 + 3)) == []
    assert step(m, up("d1", T0 + 5)) == []  # not every node is up yet
    assert step(m, up("d0", T0 + 8)) == [SetStatus(S.RUNNING)]
    s = m.state
    assert (s.running_at, s.expires_at) == (T0 + 8, T0 + 8 + HOURS * 3600)
    assert [n.joined_ms for n in s.nodes] == [ms(T0 + 8)] * 2


def test_a_stale_or_unknown_report_changes_nothing() -> None:
    m = running()
    before = [(n.state, n.generation) for n in m.state.nodes]
    assert step(m, NodeReported("d1", 7, NodeState.FAILED, T0 + 20)) == []  # old generation
    assert step(m, NodeReported("nobody", 0, NodeState.FAILED, T0 + 20)) == []
    assert [(n.state, n.generation) for n in m.state.nodes] == before


def test_the_deploy_deadline_fails_a_cluster_that_never_ran_and_refunds_all() -> None:
    m = cluster()
    assert step(m, Tick(T0 + TIMEOUT, alive("d0", "d1"))) == []  # not past it yet
    out = step(m, Tick(T0 + TIMEOUT + 1, alive("d0", "d1")))
    assert out == [
        Release("d0"),
        Release("d1"),
        RefundRest(m.state.paid),
        SetStatus(S.FAILED, "deploy timed out"),
    ]
    assert m.state.charged == 0 and m.state.escrow_left == 0


# -- the bill ---------------------------------------------------------------------------------


def test_settlement_pays_each_node_for_the_time_it_served_in_exact_slices() -> None:
    m = running()
    at = T0 + 10
    gross, provider, cut = slice_of(1800)
    assert step(m, Settle(ms(at + 1800))) == [
        PayNode("d0", "owner0", ms(at + 1800), gross, provider, cut),
        PayNode("d1", "owner1", ms(at + 1800), gross, provider, cut),
    ]
    assert step(m, Settle(ms(at + 1800))) == []  # nothing more earned
    out = step(m, Settle(ms(at + 3600)))
    assert [i.gross for i in out if isinstance(i, PayNode)] == [slice_of(3600)[0] - gross] * 2


def test_expiry_completes_the_cluster_pays_in_full_and_takes_the_buyers_fee() -> None:
    m = running()
    expires = m.state.expires_at
    assert expires is not None
    assert step(m, Tick(expires - 1, alive("d0", "d1"))) == []
    out = step(m, Tick(expires + 30, alive("d0", "d1")))
    whole, provider, cut = slice_of(HOURS * 3600)
    charged = 2 * whole
    assert out == [
        Release("d0"),
        Release("d1"),
        PayNode("d0", "owner0", ms(expires), whole, provider, cut),
        PayNode("d1", "owner1", ms(expires), whole, provider, cut),
        TakeBuyerFee(fee(charged, "IO")),
        SetStatus(S.COMPLETED, "expired"),
    ]
    assert m.state.charged == charged and m.state.refunded == 0 and m.state.ended_at == expires


def test_early_termination_pays_to_now_and_refunds_the_rest() -> None:
    m = running()
    at = T0 + 10 + 900
    out = step(m, Terminated(at))
    gross, provider, cut = slice_of(900)
    charged = 2 * gross
    refund = m.state.paid - charged - fee(charged, "IO")
    assert out == [
        Release("d0"),
        Release("d1"),
        PayNode("d0", "owner0", ms(at), gross, provider, cut),
        PayNode("d1", "owner1", ms(at), gross, provider, cut),
        TakeBuyerFee(fee(charged, "IO")),
        RefundRest(refund),
        SetStatus(S.TERMINATED, "terminated by owner"),
    ]
    with pytest.raises(ClusterNotActive):
        step(m, Terminated(at + 1))
    with pytest.raises(ClusterNotActive):
        step(m, Extended(1))


def test_extending_takes_the_prepayment_and_moves_the_end() -> None:
    m = running()
    expires = m.state.expires_at
    assert expires is not None
    total = prepayment(PRICE, 2, 3, "IO").total
    assert step(m, Extended(3)) == [TakePayment(total)]
    assert (m.state.hours, m.state.expires_at) == (HOURS + 3, expires + 3 * 3600)


# -- healing ----------------------------------------------------------------------------------


def test_a_dead_worker_is_paid_to_its_last_heartbeat_and_replaced() -> None:
    m = running()
    last = T0 + 10 + 600
    out = step(m, Tick(last + 30, alive("d0"), {"d1": last}))
    assert out == [Release("d1"), Reserve(frozenset({"d0", "d1"}))]
    assert m.awaiting_replacement
    out = step(m, ReplacementFound("d2", "owner2", last + 31))
    assert out == [AddNode("d2", "owner2", NodeRole.WORKER, 0)]
    lost = m.state.node("d1")
    assert lost is not None and lost.left_ms == ms(last) and lost.state is NodeState.FAILED
    assert m.state.status is S.RUNNING  # the head and the rest go on
    assert step(m, up("d2", last + 60)) == []
    assert m.state.node("d2").joined_ms == ms(last + 60)  # type: ignore[union-attr]
    assert step(m, Settle(ms(last + 60)))[1] == PayNode("d1", "owner1", ms(last), *slice_of(600))


def test_no_replacement_refunds_the_slots_unused_time() -> None:
    m = running()
    last = T0 + 10 + 600
    step(m, Tick(last + 30, alive("d0"), {"d1": last}))
    expires = m.state.expires_at
    assert expires is not None
    assert step(m, NoReplacement()) == [RefundSlot("d1", slot_refund(PRICE, ms(last), ms(expires)))]
    assert m.state.quantity == 1 and m.state.status is S.RUNNING


def test_a_lost_head_reforms_the_cluster_under_a_survivor() -> None:
    m = running(3)
    at = T0 + 100
    out = step(m, NodeReported("d0", 0, NodeState.FAILED, at, error="raylet died"))
    assert out == [Release("d0"), Reserve(frozenset({"d0", "d1", "d2"}))]
    out = step(m, ReplacementFound("d3", "owner3", at))
    assert out == [
        Reform(1, "d1"),
        AddNode("d3", "owner3", NodeRole.WORKER, 1),
        SetStatus(S.DEPLOYING),
    ]
    s = m.state
    roles = {n.device_id: (n.role, n.state, n.generation) for n in s.open_nodes()}
    assert roles == {
        "d1": (NodeRole.HEAD, NodeState.RESERVED, 1),
        "d2": (NodeRole.WORKER, NodeState.RESERVED, 1),
        "d3": (NodeRole.WORKER, NodeState.RESERVED, 1),
    }
    assert s.head is None and s.node("d0").left_reason == "ray failed"  # type: ignore[union-attr]
    # The new generation forms; an old-generation report is ignored meanwhile.
    assert step(m, up("d2", at + 5, generation=0)) == []
    out = step(m, *(up(d, at + 20, generation=1) for d in ("d1", "d2", "d3")))
    assert out == [SetStatus(S.RUNNING)]
    assert s.running_at == T0 + 10  # the rental runs from the first forming


def test_losing_every_device_fails_the_cluster() -> None:
    m = running(1)
    at = T0 + 70
    assert step(m, Tick(at, alive(), {"d0": at - 5})) == [Release("d0"), Reserve(frozenset({"d0"}))]
    out = step(m, NoReplacement())
    gross, provider, cut = slice_of(55)
    assert out == [
        Reform(1, None),
        PayNode("d0", "owner0", ms(at - 5), gross, provider, cut),
        TakeBuyerFee(fee(gross, "IO")),
        RefundRest(m.state.paid - gross - fee(gross, "IO")),
        SetStatus(S.FAILED, "every device was lost"),
    ]


def test_two_losses_in_one_tick_are_healed_one_after_the_other() -> None:
    m = running(3)
    at = T0 + 200
    out = step(m, Tick(at, alive("d0"), {"d1": at - 10, "d2": at - 20}))
    assert out == [Release("d1"), Reserve(frozenset({"d0", "d1", "d2"}))]
    out = step(m, ReplacementFound("d3", "owner3", at))
    assert out == [
        AddNode("d3", "owner3", NodeRole.WORKER, 0),
        Release("d2"),
        Reserve(frozenset({"d0", "d1", "d2", "d3"})),
    ]
    assert step(m, NoReplacement())[0] == RefundSlot(
        "d2", slot_refund(PRICE, ms(at - 20), ms(m.state.expires_at or 0))
    )
    assert {n.device_id for n in m.state.open_nodes()} == {"d0", "d3"}


def test_a_replacement_that_does_not_join_in_time_is_given_up_on() -> None:
    m = running()
    at = T0 + 300
    step(m, Tick(at, alive("d0"), {"d1": at}), ReplacementFound("d2", "owner2", at))
    assert step(m, Tick(at + TIMEOUT, alive("d0", "d2"))) == []
    out = step(m, Tick(at + TIMEOUT + 1, alive("d0", "d2")))
    assert out == [Release("d2"), Reserve(frozenset({"d0", "d1", "d2"}))]
    assert m.state.node("d2").left_reason == "did not join in time"  # type: ignore[union-attr]


def test_an_answer_without_a_question_is_a_bug() -> None:
    with pytest.raises(ValueError, match="no Reserve"):
        running().handle(NoReplacement())


# -- random sequences --------------------------------------------------------------------------


class Pool:
    """Devices shared by several clusters, reserved as the shell would: each device in
    at most one open node of one cluster."""

    def __init__(self, size: int) -> None:
        self.free = [f"p{i}" for i in range(size)]
        self.held: dict[str, str] = {}

    def take(self, cluster_id: str, exclude: frozenset[str]) -> str | None:
        for device in self.free:
            if device not in exclude:
                self.free.remove(device)
                self.held[device] = cluster_id
                return device
        return None

    def release(self, device: str) -> None:
        assert self.held.pop(device, None) is not None, f"{device} released twice"
        self.free.append(device)


def apply(m: ClusterMachine, pool: Pool, events: list[Event]) -> Iterator[Instruction]:
    """Feed events, answering every Reserve from the pool, as the shell does."""
    queue = list(events)
    while queue:
        for ins in m.handle(queue.pop(0)):
            yield ins
            if isinstance(ins, Release):
                pool.release(ins.device_id)
            elif isinstance(ins, Reserve):
                got = pool.take(m.state.id, ins.exclude)
                queue.insert(0, ReplacementFound(got, "o", 0.0) if got else NoReplacement())


event_kinds = st.sampled_from(["up", "starting", "fail", "tick", "settle", "extend", "end"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), event_kinds, st.integers(0, 5), st.floats(0, 900)),
             max_size=40),
    st.integers(6, 10),  # three clusters of two, and a few spare
)  # fmt: skip
def test_random_lives_keep_every_invariant(
    steps: list[tuple[int, str, int, float]], pool_size: int
) -> None:
    pool = Pool(pool_size)
    machines: list[ClusterMachine] = []
    for c in range(3):
        devices = [pool.take(f"c{c}", frozenset()) for _ in range(2)]
        m = cluster(devices=2)
        m.state.id = f"c{c}"
        for node, device in zip(m.state.nodes, devices, strict=True):
            assert device is not None
            node.device_id = device
        m.state.head_device = m.state.nodes[0].device_id
        machines.append(m)
    now = T0
    for which, kind, node_index, dt in steps:
        now += dt
        m = machines[which]
        s = m.state
        nodes = s.open_nodes()
        node = nodes[node_index % len(nodes)] if nodes else None
        events: list[Event] = []
        if kind in ("up", "starting", "fail") and node is not None:
            state = {"up": NodeState.UP, "starting": NodeState.STARTING}.get(kind, NodeState.FAILED)
            events.append(NodeReported(node.device_id, node.generation, state, now, HEAD_ADDRESS))
        elif kind == "tick":
            dead = {node.device_id} if node is not None and node_index > 3 else set()
            live = frozenset(n.device_id for n in nodes) - dead
            events.append(Tick(now, live, {d: now - 1 for d in dead}))
        elif kind == "settle":
            events.append(Settle(ms(now)))
        elif kind == "extend" and s.active:
            events.append(Extended(1))
        elif kind == "end" and s.active:
            events.append(Terminated(now))
        list(apply(m, pool, events))
        assert not m.awaiting_replacement  # every Reserve was answered
        assert problems(s) == []
        for other in machines:  # no device in two clusters, and the pool agrees
            for n in other.state.open_nodes():
                assert pool.held.get(n.device_id) == other.state.id
        held = sorted(d for o in machines for d in (n.device_id for n in o.state.open_nodes()))
        assert held == sorted(pool.held)
    for m in machines:  # every cluster ends with its escrow empty
        if m.state.active:
            list(apply(m, pool, [Terminated(now)]))
        assert problems(m.state) == [] and m.state.escrow_left == 0
        s = m.state
        assert s.paid == s.charged + s.refunded + s.buyer_fee
    assert not pool.held
