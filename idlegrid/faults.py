"""Fault injection at named points of the money paths (test-only).

A money path marks the moments where a crash matters with ``point(name)``; the
points, in the order a chain-touching operation passes them::

    before_commit   the book postings and the outbox row are written, not committed
    after_commit    committed; nothing prepared or sent
    before_chain    the signed transaction is stored; not sent
    after_chain     the chain has run it; the outbox row is not finished

and, outside the money paths, ``registrations_before_commit``: a group-committed
batch of new devices is written, not committed (``DeviceService.register_many``).

``IDLEGRID_FAULT=<point>`` makes the process die there as ``kill -9`` would
(``os._exit``: no cleanup, no flush, no rollback beyond the database's own);
``IDLEGRID_FAULT=<point>:raise`` raises ``FaultInjected`` instead. Unset (always,
outside the fault tests) a point is one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
from typing import Final

POINTS: Final = ("before_commit", "after_commit", "before_chain", "after_chain")
EXIT_CODE: Final = 86  # what a killed-at-a-point process exits with, so a test can tell


class FaultInjected(RuntimeError):
    """Raised at an armed point in ``raise`` mode."""

    def __init__(self, point: str) -> None:
        self.point = point
        super().__init__(f"fault injected at {point}")


def point(name: str) -> None:
    armed = os.environ.get("IDLEGRID_FAULT")
    if not armed:
        return
    where, _, mode = armed.partition(":")
    if where != name:
        return
    if mode == "raise":
        raise FaultInjected(name)
    sys.stderr.write(f"idlegrid: fault injected at {name}: exiting\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE)
