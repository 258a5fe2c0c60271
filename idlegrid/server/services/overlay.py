"""The control plane's side of the overlay: addresses, tickets, peer lists.

A cluster deployed with ``overlay`` on gets a /24 (``overlay.overlay.cluster_network``);
each of its nodes (one per cluster_nodes row, in row order, so replicas agree) and
each buyer peer gets an address in it. An agent reports its node's fresh WireGuard
public key; the control plane signs a ticket for it (``overlay.overlay.ticket_message``)
with the network's authority key and lists it as a peer in every other member's
assignment. Peers' public endpoints and NAT kinds are the rendezvous's sightings,
read when a heartbeat reply is made (they change without any database write).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from solders.keypair import Keypair
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.core import overlay
from idlegrid.core.cluster_machine import NodeRole
from idlegrid.errors import InvalidRequest, UnknownCluster
from idlegrid.protocol import Assignment, OverlayAssignment, OverlayPeer, RayNodeReport
from idlegrid.server.db.models import Cluster, ClusterNode
from idlegrid.server.db.models import OverlayPeer as PeerRow
from idlegrid.server.rendezvous import Rendezvous
from idlegrid.server.settings import ServerSettings

MAX_BUYER_PEERS = 8  # the buyer's own machines in one cluster's overlay


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a cluster's overlay, as the database knows it."""

    name: str  # a device id, or buyer:<key prefix>
    signer: str  # whose Ed25519 key signs its hellos
    key: str | None  # its WireGuard public key, once reported


class OverlayService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: ServerSettings,
        authority: Keypair,
        network: str,
        clock: Callable[[], float],
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.authority = authority
        self.network = network
        self.clock = clock
        self.rendezvous = Rendezvous(network, str(authority.pubkey()), clock)
        self.rendezvous_ports = settings.overlay_rendezvous_ports  # the bound ones, once bound
        # (cluster, signer, key, address) → (ticket, expires); expired ones are swept
        # whenever the table has doubled since the last sweep.
        self._tickets: dict[tuple[str, str, str, str], tuple[str, int]] = {}
        self._tickets_kept = 64

    @property
    def enabled(self) -> bool:
        return self.settings.overlay and bool(self.settings.overlay_host)

    def endpoints(self) -> list[str]:
        host = self.settings.overlay_host
        return [f"{host}:{port}" for port in self.rendezvous_ports]

    def addresses(self, cluster_id: str, names: Iterable[str]) -> dict[str, str]:
        """Every member's address, in the order they joined."""
        network = overlay.cluster_network(cluster_id)
        out: dict[str, str] = {}
        for name in names:
            out[name] = overlay.node_address(network, set(out.values()), name)
        return out

    def ticket(self, cluster_id: str, member: Member, address: str) -> tuple[str, int]:
        """The member's ticket and its expiry: signed anew only once half its life is
        gone (assignments are refreshed on every heartbeat reply)."""
        assert member.key is not None
        now = int(self.clock())
        lifetime = self.settings.overlay_ticket_s
        slot = (cluster_id, member.signer, member.key, address)
        held = self._tickets.get(slot)
        if held is not None and held[1] - now > lifetime // 2:
            return held
        if len(self._tickets) >= 2 * self._tickets_kept:
            self._tickets = {k: v for k, v in self._tickets.items() if v[1] > now}
            self._tickets_kept = max(64, len(self._tickets))
        expires = now + lifetime
        message = overlay.ticket_message(
            self.network, cluster_id, member.signer, member.key, address, expires
        )
        signature = bytes(self.authority.sign_message(message))
        self._tickets[slot] = (base64.b64encode(signature).decode(), expires)
        return self._tickets[slot]

    def assignment(
        self, cluster_id: str, members: list[Member], me: str, addresses: dict[str, str]
    ) -> OverlayAssignment:
        """What member ``me`` is told: its address and ticket, and the other members
        whose keys are known."""
        mine = next(m for m in members if m.name == me)
        ticket, expires = (None, None)
        if mine.key is not None:
            ticket, expires = self.ticket(cluster_id, mine, addresses[me])
        peers = [
            OverlayPeer(name=m.name, key=m.key, address=addresses[m.name])
            for m in members
            if m.name != me and m.key is not None
        ]
        return OverlayAssignment(
            address=addresses[me],
            prefix=overlay.CLUSTER_PREFIX,
            key=mine.key,
            ticket=ticket,
            expires=expires,
            authority=str(self.authority.pubkey()),
            network=self.network,
            rendezvous=self.endpoints(),
            relays=list(self.settings.overlay_relays),
            peers=self.freshen_peers(cluster_id, peers),
        )

    def freshen_peers(self, cluster_id: str, peers: list[OverlayPeer]) -> list[OverlayPeer]:
        out = []
        for p in peers:
            endpoint, nat, _ = self.rendezvous.sighting(cluster_id, p.key)
            out.append(p.model_copy(update={"endpoint": endpoint, "nat": nat.value}))
        return out

    def freshen_place(self, cluster_id: str, o: OverlayAssignment) -> OverlayAssignment:
        """A member's place with the latest sightings: its peers' and its own NAT."""
        nat = self.rendezvous.sighting(cluster_id, o.key)[1] if o.key else overlay.NatKind.UNKNOWN
        peers = self.freshen_peers(cluster_id, o.peers)
        return o.model_copy(update={"peers": peers, "nat": nat.value})

    def freshen(self, assignment: Assignment, device_id: str) -> Assignment:
        """Device ``device_id``'s assignment with its peers' latest sightings and a
        ticket with at least half its life left (a heartbeat reply): a rental may
        outlast a ticket, and a member whose ticket expired could say no hello."""
        o = assignment.overlay
        if o is None:
            return assignment
        fresh = self.freshen_place(assignment.cluster_id, o)
        if o.key is not None and o.ticket is not None:
            me = Member(device_id, device_id, o.key)
            ticket, expires = self.ticket(assignment.cluster_id, me, o.address)
            fresh = fresh.model_copy(update={"ticket": ticket, "expires": expires})
        return assignment.model_copy(update={"overlay": fresh})

    # -- the database's members ----------------------------------------------------------

    def members(
        self, db: Session, cluster_id: str, rows: dict[str, ClusterNode]
    ) -> tuple[list[Member], dict[str, str]]:
        """The open members (nodes not gone, buyer peers) and every address given out."""
        q = select(PeerRow).where(PeerRow.cluster_id == cluster_id).order_by(PeerRow.id)
        buyers = list(db.scalars(q))
        names = [*rows, *(buyer_name(p.key) for p in buyers)]
        members = [
            Member(r.device_id, r.device_id, r.overlay_key)
            for r in rows.values()
            if r.left_ms is None
        ]
        members += [Member(buyer_name(p.key), p.signer, p.key) for p in buyers]
        return members, self.addresses(cluster_id, names)

    def attach(
        self,
        db: Session,
        cluster: Cluster,
        rows: dict[str, ClusterNode],
        pairs: list[tuple[str, Assignment | None]],
    ) -> list[tuple[str, Assignment | None]]:
        """Each device's assignment with its place in the overlay (for an overlay cluster)."""
        if not cluster.overlay:
            return pairs
        members, addresses = self.members(db, cluster.id, rows)
        out: list[tuple[str, Assignment | None]] = []
        for device_id, a in pairs:
            if a is not None:
                place = self.assignment(cluster.id, members, device_id, addresses)
                a = a.model_copy(update={"overlay": place})
            out.append((device_id, a))
        return out

    def take_report(
        self, cluster: Cluster, rows: dict[str, ClusterNode], device_id: str, rep: RayNodeReport
    ) -> str | None:
        """Keep a node's reported WireGuard key; the problem with a head's reported
        address (on the overlay it must be its overlay address), or None."""
        node = rows[device_id]
        if rep.overlay_key is not None:
            try:
                overlay.parse_wg_key(rep.overlay_key)
            except overlay.OverlayError as exc:
                raise InvalidRequest(str(exc), field="overlay_key") from None
            node.overlay_key = rep.overlay_key
        if node.role == NodeRole.HEAD.value and rep.node_ip is not None:
            own = self.addresses(cluster.id, rows)[device_id]
            if rep.node_ip != own:
                return f"not its overlay address {own}"
        return None

    def buyer_peer(self, owner: str, cluster_id: str, key: str) -> OverlayAssignment:
        """Admit the buyer's own WireGuard key to its cluster's overlay (idempotent)."""
        try:
            overlay.parse_wg_key(key)
        except overlay.OverlayError as exc:
            raise InvalidRequest(str(exc), field="key") from None
        with self.sessions.begin() as db:
            cluster = db.get(Cluster, cluster_id)
            if cluster is None or cluster.owner != owner or cluster.token is None:
                raise UnknownCluster(cluster_id=cluster_id)
            if not cluster.overlay:
                raise InvalidRequest("this cluster was not deployed on the overlay", field="key")
            q = select(PeerRow).where(PeerRow.cluster_id == cluster_id, PeerRow.key == key)
            if db.scalars(q).first() is None:
                count = select(func.count()).where(PeerRow.cluster_id == cluster_id)
                if (db.scalar(count) or 0) >= MAX_BUYER_PEERS:
                    raise InvalidRequest(
                        f"a cluster takes at most {MAX_BUYER_PEERS} peers of its buyer",
                        field="key",
                    )
                db.add(
                    PeerRow(cluster_id=cluster_id, signer=owner, key=key, created_at=self.clock())
                )
                db.flush()
            rows = {
                r.device_id: r
                for r in db.scalars(
                    select(ClusterNode)
                    .where(ClusterNode.cluster_id == cluster_id)
                    .order_by(ClusterNode.id)
                )
            }
            members, addresses = self.members(db, cluster_id, rows)
            return self.assignment(cluster_id, members, buyer_name(key), addresses)


def buyer_name(key: str) -> str:
    return f"buyer:{key[:12]}"
