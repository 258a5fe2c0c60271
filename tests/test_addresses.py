"""Which address a cluster's head may name for itself (``core/addresses.py``)."""

from __future__ import annotations

import pytest

from idlegrid.core.addresses import head_address_problem


@pytest.mark.parametrize(
    ("reported", "source", "allowed"),
    [
        ("8.8.8.8", "8.8.8.8", True),  # a public head, where it talks from
        ("8.8.4.4", "8.8.8.8", False),  # a public head naming another machine
        ("10.0.0.2", "8.8.8.8", False),  # ... or somebody's LAN
        ("10.1.1.9", "10.1.1.1", True),  # a LAN head, inside its network
        ("8.8.8.8", "10.1.1.1", False),  # a LAN head naming the internet
        ("127.0.0.5", "10.1.1.1", False),  # loopback, from another machine
        ("127.0.0.12", "127.0.0.1", True),  # a local network on one machine
        ("10.0.0.1", "127.0.0.1", True),
        ("8.8.8.8", "127.0.0.1", False),
        ("169.254.169.254", "127.0.0.1", False),  # cloud metadata: link-local
        ("fe80::1", "127.0.0.1", False),
        ("224.0.0.1", "127.0.0.1", False),
        ("0.0.0.0", "127.0.0.1", False),
        ("::ffff:169.254.169.254", "127.0.0.1", False),  # mapped IPv4 is read as IPv4
        ("localhost", "127.0.0.1", False),  # a name, resolved who knows where later
        ("10.0.0.1", None, False),  # a report from nowhere known
    ],
)
def test_a_head_names_only_an_address_that_fits_where_it_reports_from(
    reported: str, source: str | None, allowed: bool
) -> None:
    assert (head_address_problem(reported, source) is None) is allowed
