"""A network lab for tests: homes behind NAT routers, a public network, real packets.

Made for the per-cluster WireGuard overlay's tests: devices in homes behind NAT, a
control plane and a relay on a "public" network, a buyer somewhere else. Every piece
is a Linux network namespace joined by veth pairs; nothing touches the host's own
network (the veths are created directly inside the namespaces, so no interface ever
appears in the root namespace). Needs root, ``ip`` (iproute2) and ``nft`` (nftables);
``conntrack`` is used by :meth:`NetLab.rebind` when present. :func:`netlab_available`
says whether this machine can run it (tests skip with its reason).

Topology (``P`` is the lab's unique prefix, e.g. ``nl3f9a``; addresses are fixed per
lab, which is fine because each lab has its own namespaces)::

                           P-sw (namespace holding bridge br0, no address)
                     ______________________|________________________________
                    |                 |                       |              |
               P-public          P-<host>               P-<home>-gw     P-<home2>-gw ...
            203.0.113.2         203.0.113.10..          wan 203.0.113.100..  (router:
         control plane,         plain public hosts      nft masquerade,       forward,
         relay                  (e.g. the buyer)        stateful firewall)    NAT)
                                                        lan 192.168.N.1
                                                              |
                                                         P-<home>
                                                        192.168.N.2  (the device;
                                                        default via 192.168.N.1)

* Public side: one /24, ``203.0.113.0/24`` (TEST-NET-3). ``lab.public`` is ``.2``,
  hosts from :meth:`NetLab.add_host` get ``.10`` upwards, home routers ``.100``
  upwards, addresses taken by :meth:`NetLab.rebind` ``.200`` upwards.
* Home ``N`` (the N-th home, from 1): LAN ``192.168.N.0/24``, router ``.1``, device
  ``.2``. Nobody outside has a route to any LAN, and each router's forward chain drops
  anything arriving on its WAN side that is not a reply to a flow opened from inside,
  so the public side cannot open connections into homes and homes cannot reach each
  other's private addresses. No port is forwarded anywhere. The router's own input
  chain likewise drops unsolicited packets from the WAN, before conntrack confirms
  them, so a stray early packet (e.g. the first shot of a hole punch) leaves no
  conntrack entry behind that could steal the mapping.
* ``nat="easy"``: ``masquerade``. Linux keeps a UDP socket's source port whenever it is
  free, so one socket gets the same public ip:port whatever the destination
  (endpoint-independent mapping); filtering is conntrack's usual (only replies to
  flows the inside opened), i.e. "port-restricted cone" — hole punching works.
* ``nat="hard"``: ``masquerade fully-random``: a new random port for every new flow, so
  the mapping differs per destination ("symmetric") — hole punching fails.
* A buyer "in a fourth place" can be :meth:`NetLab.add_host` (directly on the public
  network) or a fourth :meth:`NetLab.add_home` (behind its own NAT); tests choose.

IPv6 is disabled in every namespace; loopback is up everywhere; ip_forward is on in
routers only; rp_filter is off everywhere.

Cleanup: ``with NetLab() as lab:`` removes everything on exit (processes started with
:meth:`NetLab.popen` are terminated, then the namespaces deleted, which deletes their
veths). :func:`sweep` does the same for any prefix, e.g. after a crashed run.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

PUBLIC_NET = ipaddress.IPv4Network("203.0.113.0/24")
PUBLIC_PREFIXLEN = PUBLIC_NET.prefixlen
PUBLIC_HOST_IP = "203.0.113.2"
_HOSTS_FIRST = 10
_ROUTERS_FIRST = 100
_REBIND_FIRST = 200
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")

Nat = Literal["easy", "hard"]


def netlab_available() -> str | None:
    """None when a NetLab can be built here, else why not (for ``pytest.skip``)."""
    if os.name != "posix" or not os.path.isdir("/proc/sys/net"):
        return "netlab needs Linux"
    if os.geteuid() != 0:
        return "netlab needs root (network namespaces, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"netlab needs `{tool}` (apt-get install {package})"
    probe = f"nl{secrets.token_hex(2)}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        nft = subprocess.run(
            ["ip", "netns", "exec", probe, "nft", "-f", "-"],
            input="table ip t {\n chain c {\n type nat hook postrouting priority srcnat;\n }\n}\n",
            capture_output=True,
            text=True,
        )
        if nft.returncode != 0:
            return f"nftables NAT unusable in a namespace: {nft.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sweep(prefix: str) -> list[str]:
    """Kill the processes in, and delete, every namespace named ``<prefix>-...``.

    Returns the namespaces deleted. Pass one lab's prefix (``lab.prefix``) or the
    common ``"nl"`` stem only when no other lab can be running.
    """
    if not prefix:
        raise ValueError("sweep needs a prefix")
    doomed = [ns for ns in _namespaces() if ns.startswith(prefix)]
    for ns in doomed:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    for ns in doomed:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return doomed


@dataclass
class Host:
    """A plain namespace on the public /24."""

    name: str
    ns: str
    ip: str


@dataclass
class Home:
    """A home: a device namespace on a private LAN behind a NAT router namespace."""

    name: str
    index: int
    nat: Nat
    ns: str  # the device's namespace (where its agent runs)
    router: str  # the router's namespace
    lan_ip: str  # the device's private address, 192.168.N.2
    gateway: str  # the router's LAN address, 192.168.N.1
    public_ip: str  # the router's current public address (changes on rebind)

    @property
    def lan(self) -> str:
        return f"192.168.{self.index}.0/24"


def _router_ruleset(nat: Nat) -> str:
    masquerade = "masquerade fully-random" if nat == "hard" else "masquerade"
    return f"""\
table ip netlab {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" {masquerade}
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }}
}}
"""


class NetLab:
    """Namespaces, veths, a bridge and NAT routers; see the module docstring."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or f"nl{secrets.token_hex(2)}"
        self.switch = f"{self.prefix}-sw"
        self.public = f"{self.prefix}-public"
        self.public_ip = PUBLIC_HOST_IP
        self.homes: dict[str, Home] = {}
        self.hosts: dict[str, Host] = {}
        self._ports = 0
        self._next_host = _HOSTS_FIRST
        self._next_router = _ROUTERS_FIRST
        self._next_rebind = _REBIND_FIRST
        self._procs: list[subprocess.Popen[Any]] = []
        try:
            self._new_ns(self.switch)
            self._ip(self.switch, "link", "add", "br0", "type", "bridge")
            self._ip(self.switch, "link", "set", "br0", "up")
            self._attach(self.public, "eth0", self.public_ip)
        except BaseException:
            self.close()
            raise

    # -- plumbing -------------------------------------------------------------------

    @staticmethod
    def _check(argv: Sequence[str], stdin: str | None = None) -> None:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")

    def _ip(self, ns: str, *args: str) -> None:
        self._check(["ip", "-n", ns, *args])

    def _sysctl(self, ns: str, *settings: str) -> None:
        self._check(["ip", "netns", "exec", ns, "sysctl", "-qw", *settings])

    def _new_ns(self, ns: str, *, forward: bool = False) -> None:
        self._check(["ip", "netns", "add", ns])
        self._ip(ns, "link", "set", "lo", "up")
        self._sysctl(
            ns,
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            f"net.ipv4.ip_forward={int(forward)}",
        )

    def _attach(self, ns: str, ifname: str, ip: str, *, forward: bool = False) -> None:
        """Create ``ns`` and plug its ``ifname`` into the public bridge with ``ip``."""
        self._new_ns(ns, forward=forward)
        self._ports += 1
        port = f"p{self._ports}"
        self._ip(
            self.switch, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns
        )
        self._ip(self.switch, "link", "set", port, "master", "br0", "up")
        self._ip(ns, "addr", "add", f"{ip}/{PUBLIC_PREFIXLEN}", "dev", ifname)
        self._ip(ns, "link", "set", ifname, "up")

    def _ns_name(self, name: str, suffix: str = "") -> str:
        if not _NAME_RE.match(name):
            raise ValueError(f"name {name!r}: lower-case letters and digits, ≤ 16")
        if name in self.homes or name in self.hosts or name in ("public", "sw"):
            raise ValueError(f"name {name!r} already used in this lab")
        return f"{self.prefix}-{name}{suffix}"

    def _public_address(self, counter: str, limit: int) -> str:
        n: int = getattr(self, counter)
        if n >= limit:
            raise RuntimeError(f"lab out of public addresses ({counter})")
        setattr(self, counter, n + 1)
        return str(PUBLIC_NET[n])

    # -- building -------------------------------------------------------------------

    def link_root(self, ip: str = "203.0.113.254") -> str:
        """Plug this (the test's own, root) namespace into the public network at ``ip``,
        so the test can drive what runs there; the link goes with the lab. One lab at a
        time may do this (the public /24's route is the root namespace's)."""
        name = f"{self.prefix}r"
        self._check(["ip", "link", "add", name, "type", "veth", "peer", "name", "root",
                     "netns", self.switch])  # fmt: skip
        self._ip(self.switch, "link", "set", "root", "master", "br0", "up")
        self._check(["ip", "addr", "add", f"{ip}/{PUBLIC_PREFIXLEN}", "dev", name])
        self._check(["ip", "link", "set", name, "up"])
        return ip

    def add_host(self, name: str) -> Host:
        """A plain namespace directly on the public /24 (``eth0``, 203.0.113.10+)."""
        ns = self._ns_name(name)
        ip = self._public_address("_next_host", _ROUTERS_FIRST)
        self._attach(ns, "eth0", ip)
        host = Host(name=name, ns=ns, ip=ip)
        self.hosts[name] = host
        return host

    def add_home(self, name: str, nat: Nat) -> Home:
        """A device namespace on 192.168.N.0/24 behind a router doing ``nat``."""
        if nat not in ("easy", "hard"):
            raise ValueError(f"nat must be 'easy' or 'hard', not {nat!r}")
        device = self._ns_name(name)
        router = self._ns_name(name, "-gw")
        index = len(self.homes) + 1
        if index > 254:
            raise RuntimeError("lab out of home LANs")
        public_ip = self._public_address("_next_router", _REBIND_FIRST)
        self._attach(router, "wan", public_ip, forward=True)
        self._new_ns(device)
        gateway, lan_ip = f"192.168.{index}.1", f"192.168.{index}.2"
        self._ip(
            router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", device
        )
        self._ip(router, "addr", "add", f"{gateway}/24", "dev", "lan")
        self._ip(router, "link", "set", "lan", "up")
        self._ip(device, "addr", "add", f"{lan_ip}/24", "dev", "eth0")
        self._ip(device, "link", "set", "eth0", "up")
        self._ip(device, "route", "add", "default", "via", gateway)
        self._check(["ip", "netns", "exec", router, "nft", "-f", "-"], _router_ruleset(nat))
        home = Home(
            name=name,
            index=index,
            nat=nat,
            ns=device,
            router=router,
            lan_ip=lan_ip,
            gateway=gateway,
            public_ip=public_ip,
        )
        self.homes[name] = home
        return home

    def home_public_ip(self, home: Home | str) -> str:
        """The home router's current public address."""
        return self._home(home).public_ip

    def _home(self, home: Home | str) -> Home:
        return self.homes[home] if isinstance(home, str) else home

    def rebind(self, home: Home | str) -> str:
        """Give the home's router a new public address, forget the old one and every
        NAT mapping (as when an ISP hands out a new address); returns the new one."""
        h = self._home(home)
        new_ip = self._public_address("_next_rebind", PUBLIC_NET.num_addresses - 1)
        # Old first: deleting a primary address would take secondaries with it.
        # Removing it also makes masquerade drop the mappings that used it.
        self._ip(h.router, "addr", "del", f"{h.public_ip}/{PUBLIC_PREFIXLEN}", "dev", "wan")
        self._ip(h.router, "addr", "add", f"{new_ip}/{PUBLIC_PREFIXLEN}", "dev", "wan")
        if shutil.which("conntrack"):
            # Exit status 1 with "0 flow entries" is not an error.
            subprocess.run(
                ["ip", "netns", "exec", h.router, "conntrack", "-F"], capture_output=True
            )
        h.public_ip = new_ip
        return new_ip

    # -- running things -------------------------------------------------------------

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside namespace ``ns``; terminated when the lab closes."""
        proc: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)
        self._procs.append(proc)
        return proc

    def run(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside namespace ``ns`` to completion (``subprocess.run``'s kw)."""
        return subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)

    # -- teardown -------------------------------------------------------------------

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()
        sweep(f"{self.prefix}-")

    def __enter__(self) -> NetLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
