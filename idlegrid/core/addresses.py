"""Which address a cluster's head may name for itself. Pure.

A hired head reports the address its workers dial and the buyer's dashboard and
Ray client URLs point to. Taken on its word, a hostile head could point them at
anything: the cloud metadata service, a machine on a worker's or the buyer's
LAN, a stranger on the internet. So the address must be an IP literal (no
names that resolve elsewhere later), never link-local, multicast, unspecified
or reserved, and it must fit where the report came from (``source``, the
address the control plane saw the request arrive from):

- from a public address, the head is reached where it talks from: the same
  address, and nothing else;
- from a private (LAN) address, a private address or that one: a head inside
  a network names an address inside it, never one outside;
- from loopback (a local network on one machine), any private or loopback
  address.

Overlay addresses the control plane hands out (issue 16) will replace this
rule with an exact one: the head's own overlay address.
"""

from __future__ import annotations

import ipaddress

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def head_address_problem(reported: str, source: str | None) -> str | None:
    """Why a head reporting from ``source`` may not name ``reported``; None when it may."""
    address = _parse(reported)
    if address is None:
        return "not an IP address"
    if (
        address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
    ):
        return "a link-local, multicast, unspecified or reserved address"
    origin = _parse(source) if source else None
    if origin is None:
        return "the report's own address is unknown"
    if origin.is_loopback:
        return None if (address.is_loopback or address.is_private) else "a public address"
    if address.is_loopback:
        return "a loopback address, reported from another machine"
    if origin.is_private:
        if address == origin or (address.is_private and not address.is_global):
            return None
        return "outside the network the report came from"
    return None if address == origin else "not the address the report came from"
