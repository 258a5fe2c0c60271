"""The mailbox the heartbeat reply reads: a challenge and an assignment per device,
kept apart, and nothing held for a device with neither."""

from __future__ import annotations

from idlegrid.protocol import Assignment
from idlegrid.server.mailbox import EMPTY, Mailbox


def assignment(cluster_id: str) -> Assignment:
    return Assignment(cluster_id=cluster_id, generation=0, role="worker", token="t")


def test_challenges_and_assignments_are_kept_apart() -> None:
    box = Mailbox()
    assert box.get("d") is EMPTY and not box.get("d").busy
    box.set_challenge("d", "p1")
    box.set_assignment("d", assignment("c1"))
    assert (box.challenge("d"), box.assignment("d")) == ("p1", assignment("c1"))
    box.set_challenge("d", None)  # the proof closed; the hire goes on
    assert box.get("d").busy and box.challenge("d") is None
    box.drop_assignment("d", "another")  # not its cluster: kept
    assert box.assignment("d") == assignment("c1")
    box.drop_assignment("d", "c1")
    assert box.get("d") is EMPTY and len(box) == 0  # nothing held for it


def test_loading_challenges_replaces_them_and_keeps_assignments() -> None:
    box = Mailbox()
    box.set_challenge("old", "p0")
    box.set_assignment("hired", assignment("c"))
    box.load_challenges({"new": "p1", "hired": "p2"})
    assert box.challenge("old") is None and box.challenge("new") == "p1"
    assert (box.challenge("hired"), box.assignment("hired")) == ("p2", assignment("c"))
    assert len(box) == 2
