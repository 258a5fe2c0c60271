"""The network lab (tests/netlab.py) behaves as its docstring says, with real packets.

One lab for the module: homes ``a`` and ``b`` behind easy NATs, ``c`` behind a hard
NAT, ``r`` (easy) for the rebind test, and a plain public host ``outsider``. A server
in ``lab.public`` answers TCP on 8080 and UDP on 3478/3479 with the ``ip:port`` it
saw the client come from (like STUN). Clients are python one-liners run inside the
namespaces. Skipped, with the reason, where the lab cannot run (not root, no nft, ...).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.netlab import Home, Nat, NetLab, netlab_available, sweep

_REASON = netlab_available()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

PY = sys.executable
TCP_PORT = 8080
UDP_PORTS = (3478, 3479)

SERVER = f"""
import selectors, socket
sel = selectors.DefaultSelector()
for port in {UDP_PORTS!r}:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", port))
    sel.register(u, selectors.EVENT_READ, "udp")
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", {TCP_PORT}))
t.listen()
sel.register(t, selectors.EVENT_READ, "tcp")
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.data == "udp":
            data, peer = key.fileobj.recvfrom(2048)
            key.fileobj.sendto(("%s:%d" % peer).encode(), peer)
        else:
            c, peer = key.fileobj.accept()
            c.sendall(("%s:%d" % peer).encode())
            c.close()
"""

# argv: host port -> prints what the server saw, or fails (exit 1) within 1.5 s.
TCP_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)
print(s.recv(100).decode())
"""

# argv: server -> one UDP socket asks both UDP ports; prints "port seen" per reply.
UDP_MAPPING = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40000))
s.settimeout(2)
for port in {UDP_PORTS!r}:
    s.sendto(b"?", (sys.argv[1], port))
    data, peer = s.recvfrom(100)
    print(peer[1], data.decode())
"""

# argv: server name -> learns its mapping from the server, prints it, reads the peer's
# from stdin, then for 2 s sends to the peer every 0.1 s; prints what it received.
PUNCH = f"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 41000))
s.settimeout(2)
s.sendto(b"?", (sys.argv[1], {UDP_PORTS[0]}))
print(s.recvfrom(100)[0].decode(), flush=True)
ip, port = sys.stdin.readline().strip().split(":")
got = set()
s.settimeout(0.1)
end = time.monotonic() + 2
while time.monotonic() < end:
    s.sendto(("hello from " + sys.argv[2]).encode(), (ip, int(port)))
    try:
        data, peer = s.recvfrom(100)
        if peer == (ip, int(port)):
            got.add(data.decode())
    except TimeoutError:
        pass
print(",".join(sorted(got)) or "none", flush=True)
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    with NetLab() as lab:
        homes: list[tuple[str, Nat]] = [("a", "easy"), ("b", "easy"), ("c", "hard"), ("r", "easy")]
        for name, nat in homes:
            lab.add_home(name, nat)
        lab.add_host("outsider")
        server = lab.popen(lab.public, [PY, "-c", SERVER], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        yield lab
    assert not [ns for ns in _all_namespaces() if ns.startswith(lab.prefix)]


def _all_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def py(lab: NetLab, ns: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.run(ns, [PY, "-c", script, *args], capture_output=True, text=True, timeout=10)


def tcp_seen(lab: NetLab, ns: str, host: str) -> str:
    done = py(lab, ns, TCP_CLIENT, host, str(TCP_PORT))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def udp_seen(lab: NetLab, home: Home) -> dict[int, str]:
    done = py(lab, home.ns, UDP_MAPPING, lab.public_ip)
    assert done.returncode == 0, done.stderr
    return {int(port): seen for port, seen in (line.split() for line in done.stdout.splitlines())}


def test_each_home_reaches_public_tcp_through_its_nat(lab: NetLab) -> None:
    for home in lab.homes.values():
        ip, _ = tcp_seen(lab, home.ns, lab.public_ip).split(":")
        assert ip == home.public_ip == lab.home_public_ip(home.name)
        assert home.lan_ip.startswith("192.168.")
    outsider = lab.hosts["outsider"]
    assert tcp_seen(lab, outsider.ns, lab.public_ip).split(":")[0] == outsider.ip


def test_public_cannot_connect_into_a_home(lab: NetLab) -> None:
    a = lab.homes["a"]
    server = lab.popen(a.ns, [PY, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    assert tcp_seen(lab, a.ns, "127.0.0.1")  # it is listening
    outsider = lab.hosts["outsider"].ns
    # The router's public address forwards nothing and accepts nothing unsolicited.
    assert py(lab, outsider, TCP_CLIENT, a.public_ip, str(TCP_PORT)).returncode != 0
    # No route to the private address; and even with one, the router drops it.
    assert py(lab, outsider, TCP_CLIENT, a.lan_ip, str(TCP_PORT)).returncode != 0
    route = ["ip", "route", "add", a.lan, "via", a.public_ip]
    assert lab.run(outsider, route).returncode == 0
    try:
        assert py(lab, outsider, TCP_CLIENT, a.lan_ip, str(TCP_PORT)).returncode != 0
    finally:
        lab.run(outsider, ["ip", "route", "del", a.lan])
    server.terminate()
    server.wait()


def test_homes_cannot_reach_each_others_private_addresses(lab: NetLab) -> None:
    a, b = lab.homes["a"], lab.homes["b"]
    server = lab.popen(b.ns, [PY, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    assert py(lab, a.ns, TCP_CLIENT, b.lan_ip, str(TCP_PORT)).returncode != 0
    assert py(lab, a.ns, TCP_CLIENT, b.gateway, str(TCP_PORT)).returncode != 0
    server.terminate()
    server.wait()


def test_easy_nat_maps_one_socket_to_one_public_endpoint(lab: NetLab) -> None:
    a = lab.homes["a"]
    seen = udp_seen(lab, a)
    assert set(seen) == set(UDP_PORTS)
    assert seen[UDP_PORTS[0]] == seen[UDP_PORTS[1]]
    assert seen[UDP_PORTS[0]].split(":")[0] == a.public_ip


def test_hard_nat_maps_each_destination_differently(lab: NetLab) -> None:
    c = lab.homes["c"]
    seen = udp_seen(lab, c)
    assert set(seen) == set(UDP_PORTS)
    assert seen[UDP_PORTS[0]] != seen[UDP_PORTS[1]]
    assert {s.split(":")[0] for s in seen.values()} == {c.public_ip}


def test_rebind_gives_a_new_public_address(lab: NetLab) -> None:
    r = lab.homes["r"]
    old = r.public_ip
    assert udp_seen(lab, r)[UDP_PORTS[0]].split(":")[0] == old
    new = lab.rebind(r)
    assert new != old and lab.home_public_ip(r) == new == r.public_ip
    assert udp_seen(lab, r)[UDP_PORTS[0]].split(":")[0] == new
    assert tcp_seen(lab, r.ns, lab.public_ip).split(":")[0] == new
    wan = lab.run(
        r.router, ["ip", "-4", "-o", "addr", "show", "dev", "wan"], capture_output=True, text=True
    )
    assert old not in wan.stdout and new in wan.stdout


def punch(lab: NetLab, one: Home, two: Home) -> tuple[str, str]:
    procs = [
        lab.popen(
            h.ns,
            [PY, "-c", PUNCH, lab.public_ip, h.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for h in (one, two)
    ]
    mapped = []
    for proc in procs:
        assert proc.stdout is not None
        mapped.append(proc.stdout.readline().strip())
    for proc, peer in zip(procs, reversed(mapped), strict=True):
        assert proc.stdin is not None
        proc.stdin.write(peer + "\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        results.append(out.strip())
    return results[0], results[1]


def test_hole_punch_works_between_two_easy_homes(lab: NetLab) -> None:
    a, b = lab.homes["a"], lab.homes["b"]
    assert punch(lab, a, b) == ("hello from b", "hello from a")


def test_hole_punch_fails_between_easy_and_hard_homes(lab: NetLab) -> None:
    a, c = lab.homes["a"], lab.homes["c"]
    assert punch(lab, a, c) == ("none", "none")


def test_sweep_removes_a_crashed_labs_namespaces() -> None:
    lab = NetLab()
    lab.add_home("x", "easy")
    assert [ns for ns in _all_namespaces() if ns.startswith(lab.prefix)]
    assert len(sweep(lab.prefix)) == 4  # switch, public, router, device
    assert not [ns for ns in _all_namespaces() if ns.startswith(lab.prefix)]
