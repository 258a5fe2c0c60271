"""The overlay's relay and rendezvous on real sockets, and real WireGuard through the relay.

``test_relay.py`` covers the rules without sockets. Here: both services on UDP
sockets of 127.0.0.1, and (root, ``wireguard-go`` and ``wg`` needed; skipped with
the reason otherwise) two ``wireguard-go`` interfaces in two network namespaces
whose only configured endpoint is the relay, registered by hellos sent from
WireGuard's own port with a raw socket exactly as agents send them. A TCP
connection between their overlay addresses then has to go through the relay.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from idlegrid.core import overlay
from idlegrid.relay import Relay, RelayServer
from idlegrid.server.rendezvous import Rendezvous, RendezvousServer
from tests.test_relay import AUTHORITY, NETWORK, hello, initiation, node, response

# -- on real sockets ------------------------------------------------------------------------


def test_relay_and_rendezvous_on_udp_sockets() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server = RelayServer(Relay(NETWORK, str(AUTHORITY.pubkey())), "127.0.0.1", 0)
        port = await server.start()
        rv = Rendezvous(NETWORK, str(AUTHORITY.pubkey()))
        rv_server = RendezvousServer(rv, "127.0.0.1", (0, 0))
        rv_ports = await rv_server.start()
        socks = []
        try:
            assert port > 0 and rv_ports[0] > 0 and rv_ports[1] > 0 and rv_ports[0] != rv_ports[1]
            a, b = node(address="100.96.0.2"), node(address="100.96.0.3")
            for n in (a, b):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
                socks.append(s)
                for p in (port, *rv_ports):
                    s.sendto(hello(n, time.time()), ("127.0.0.1", p))
            sa, sb = socks

            async def recv(s: socket.socket) -> bytes:
                return await asyncio.wait_for(loop.sock_recv(s, 2048), 5)

            sa.sendto(b"IGOP12345678", ("127.0.0.1", port))
            assert await recv(sa) == b"IGOQ12345678"
            init = initiation(0xA1, b.wg.public)
            sa.sendto(init, ("127.0.0.1", port))
            assert await recv(sb) == init
            resp = response(0xB1, 0xA1, a.wg.public)
            sb.sendto(resp, ("127.0.0.1", port))
            assert await recv(sa) == resp
            assert server.relay.stats()["forwarded_packets"] == 2
            assert server.relay.stats()["members"] == 2
            endpoint, kind, _ = rv.sighting("c1", a.wg.b64)
            assert endpoint == f"127.0.0.1:{sa.getsockname()[1]}"
            assert kind == overlay.NatKind.EASY
        finally:
            for s in socks:
                s.close()
            server.stop()
            rv_server.close()

    asyncio.run(scenario())


# -- two real WireGuard interfaces, through the relay only ------------------------------------


def _wireguard_unavailable() -> str | None:
    for tool in ("wireguard-go", "wg", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    if os.geteuid() != 0:
        return "network namespaces and interfaces need root"
    return None


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _send_from_port(source_port: int, port: int, payload: bytes) -> None:
    """A datagram from WireGuard's own port, which its socket holds: a raw socket
    writes the UDP header itself (checksum 0: none), as agents do."""
    header = struct.pack("!HHHH", source_port, port, 8 + len(payload), 0)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as s:
        s.sendto(header + payload, ("127.0.0.1", 0))


class RelayThread:
    """A RelayServer on its own event loop, so the test can block on subprocesses."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = RelayServer(Relay(NETWORK, str(AUTHORITY.pubkey())), "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stats(self) -> dict[str, object]:
        async def read() -> dict[str, object]:
            return self.server.relay.stats()

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)

    def close(self) -> None:
        async def stop() -> None:
            self.server.stop()
            await asyncio.sleep(0.05)  # the transport finishes closing

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


SERVE = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{address}", 7777))
s.listen()
s.settimeout(60)
c, _ = s.accept()
c.sendall(c.recv(100).upper())
c.close()
"""

CONNECT = """
import socket, time
deadline = time.monotonic() + 40
while True:
    try:
        c = socket.create_connection(("{address}", 7777), timeout=3)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.3)
c.sendall(b"hello through the relay")
print(c.recv(100).decode())
"""


@pytest.mark.skipif(_wireguard_unavailable() is not None, reason=str(_wireguard_unavailable()))
def test_wireguard_talks_through_the_relay(tmp_path: Path) -> None:
    tag = secrets.token_hex(4)
    names = {side: f"igr{tag}{side}" for side in "ab"}  # 12 characters
    spaces = {side: f"igr-{tag}-{side}" for side in "ab"}
    addresses = {"a": "100.96.0.2", "b": "100.96.0.3"}
    nodes = {side: node(address=addresses[side]) for side in "ab"}
    ports = {side: _free_udp_port() for side in "ab"}
    relay_ = RelayThread()
    procs: list[subprocess.Popen[bytes]] = []
    made: list[str] = []
    try:
        for side in "ab":
            _run("ip", "netns", "add", spaces[side])
            made.append(spaces[side])
            _run("ip", "-n", spaces[side], "link", "set", "lo", "up")
            procs.append(
                subprocess.Popen(
                    ["wireguard-go", "-f", names[side]],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env={**os.environ, "LOG_LEVEL": "error"},
                )
            )
            sock = Path("/var/run/wireguard") / f"{names[side]}.sock"
            deadline = time.monotonic() + 10
            while not sock.exists():
                assert procs[-1].poll() is None, "wireguard-go exited"
                assert time.monotonic() < deadline, "wireguard-go did not start"
                time.sleep(0.05)
            key_file = tmp_path / f"{side}.key"
            key_file.write_text(base64.b64encode(nodes[side].wg.private).decode() + "\n")
            _run("wg", "set", names[side], "private-key", str(key_file))
            _run("wg", "set", names[side], "listen-port", str(ports[side]))
            # Registered before WireGuard sends anything: a hello from WireGuard's port.
            _send_from_port(ports[side], relay_.port, hello(nodes[side], time.time()))
        deadline = time.monotonic() + 5
        while relay_.stats()["members"] != 2:
            assert time.monotonic() < deadline, f"hellos not taken: {relay_.stats()}"
            time.sleep(0.05)
        for side, other in (("a", "b"), ("b", "a")):
            _run(
                "wg", "set", names[side],
                "peer", nodes[other].wg.b64,
                "allowed-ips", f"{addresses[other]}/32",
                "endpoint", f"127.0.0.1:{relay_.port}",
                "persistent-keepalive", "1",
            )  # fmt: skip
            # The tunnel goes into the namespace; the UDP socket stays here, on loopback.
            _run("ip", "link", "set", names[side], "netns", spaces[side])
            _run(
                "ip", "-n", spaces[side], "addr", "add", f"{addresses[side]}/24", "dev", names[side]
            )
            _run("ip", "-n", spaces[side], "link", "set", names[side], "up")
        before = relay_.stats()["forwarded_packets"]
        assert isinstance(before, int)
        ns_exec = ("ip", "netns", "exec")
        server = subprocess.Popen(
            [*ns_exec, spaces["b"], sys.executable, "-c", SERVE.format(address=addresses["b"])],
            stdout=subprocess.DEVNULL,
        )
        procs.append(server)
        client = subprocess.run(
            [*ns_exec, spaces["a"], sys.executable, "-c", CONNECT.format(address=addresses["b"])],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.strip() == "HELLO THROUGH THE RELAY"
        assert server.wait(10) == 0
        stats = relay_.stats()
        forwarded = stats["forwarded_packets"]
        assert isinstance(forwarded, int) and forwarded > before + 4, stats
        assert stats["members"] == 2
        # Both ends really hold a session with each other (a handshake happened).
        handshakes = _run(
            "ip", "netns", "exec", spaces["a"], "wg", "show", names["a"], "latest-handshakes"
        )
        assert nodes["b"].wg.b64 in handshakes and not handshakes.strip().endswith("\t0")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for space in made:
            subprocess.run(["ip", "netns", "del", space], capture_output=True, timeout=30)
        for name in names.values():
            (Path("/var/run/wireguard") / f"{name}.sock").unlink(missing_ok=True)
        relay_.close()
