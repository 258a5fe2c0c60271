"""One WireGuard interface in user space (``wireguard-go``), driven over its UAPI socket.

The overlay (``core/overlay.py``) gives every node of a cluster a fresh key pair,
made here; the private key goes to ``wireguard-go`` and nowhere else. The interface
is created in the agent's network namespace, so its UDP socket (the encrypted
traffic) stays with the agent, and is then moved into the node's sandbox
namespace, where the buyer's code sees only the tunnel and its overlay address::

    agent's namespace                      sandbox namespace
    wireguard-go ── UDP socket ── NAT ──▶  tunnel (overlay address) ◀── Ray, the buyer's code

Also here: ``send_from_port``, which sends a datagram whose source port is
WireGuard's own (a raw socket, so the NAT maps it exactly as it maps WireGuard's
packets): how hellos tell the rendezvous and the relays where the node is.

Configuration goes over the cross-platform UAPI (``/var/run/wireguard/NAME.sock``,
a line protocol: ``set=1`` / ``get=1``), not by running ``wg`` for every change.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

UAPI_DIR = Path("/var/run/wireguard")
MTU = 1280  # fits inside any path's 1500 with room for NAT and relay headers


class WireGuardError(RuntimeError):
    """``wireguard-go`` missing, or an interface that would not start or take its settings."""


def available() -> str | None:
    """None when WireGuard interfaces can be made here, else why not."""
    for tool in ("wireguard-go", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install wireguard-go iproute2)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    if os.geteuid() != 0:
        return "making network interfaces needs root"
    return None


@dataclass(frozen=True, slots=True)
class KeyPair:
    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        key = X25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(key.private_bytes_raw(), public)

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public).decode()


@dataclass(frozen=True, slots=True)
class PeerStatus:
    endpoint: str | None
    last_handshake: float | None
    rx_bytes: int
    tx_bytes: int


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # A killed agent leaves no interface behind (PR_SET_PDEATHSIG = 1, SIGTERM).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class WireGuard:
    """A ``wireguard-go`` interface named ``name`` (at most 15 characters), run in
    this network namespace or in ``netns`` (its UDP socket then lives there)."""

    def __init__(
        self, name: str, keys: KeyPair, listen_port: int = 0, netns: str | None = None
    ) -> None:
        if len(name) > 15:
            raise WireGuardError(f"interface name {name!r} is longer than 15 characters")
        reason = available()
        if reason is not None:
            raise WireGuardError(reason)
        self.name = name
        self.netns = netns
        self.tunnel_netns = netns  # where the tunnel is (``attach`` may move it)
        self.socket_path = UAPI_DIR / f"{name}.sock"
        inside = ["ip", "netns", "exec", netns] if netns is not None else []
        self.proc = subprocess.Popen(
            [*inside, "wireguard-go", "-f", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "LOG_LEVEL": "error"},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 10
        while not self.socket_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.close()
                raise WireGuardError(f"wireguard-go {name} did not start: {err.strip()[-300:]}")
            time.sleep(0.02)
        self._set([f"private_key={keys.private.hex()}", f"listen_port={listen_port}"])
        self.listen_port = int(self._get()["listen_port"][0])

    # -- the UAPI -----------------------------------------------------------------------

    def _call(self, request: str) -> list[tuple[str, str]]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(request.encode())
            data = b""
            while not data.endswith(b"\n\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        pairs = [tuple(line.split("=", 1)) for line in data.decode().splitlines() if "=" in line]
        out = [(k, v) for k, v in pairs]
        errno = dict(out).get("errno", "0")
        if errno != "0":
            raise WireGuardError(f"{self.name}: {request.splitlines()[0]} failed (errno {errno})")
        return out

    def _set(self, lines: list[str]) -> None:
        self._call("set=1\n" + "".join(f"{line}\n" for line in lines) + "\n")

    def _get(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in self._call("get=1\n\n"):
            out.setdefault(k, []).append(v)
        return out

    def set_peer(
        self, key: bytes, allowed_ip: str, endpoint: str | None = None, keepalive_s: int = 0
    ) -> None:
        lines = [f"public_key={key.hex()}", "replace_allowed_ips=true", f"allowed_ip={allowed_ip}"]
        lines.append(f"persistent_keepalive_interval={keepalive_s}")
        if endpoint is not None:
            lines.append(f"endpoint={endpoint}")
        self._set(lines)

    def set_endpoint(self, key: bytes, endpoint: str) -> None:
        self._set([f"public_key={key.hex()}", "update_only=true", f"endpoint={endpoint}"])

    def remove_peer(self, key: bytes) -> None:
        self._set([f"public_key={key.hex()}", "remove=true"])

    def peers(self) -> dict[bytes, PeerStatus]:
        out: dict[bytes, PeerStatus] = {}
        current: dict[str, str] = {}

        def flush() -> None:
            if "public_key" in current:
                sec = int(current.get("last_handshake_time_sec", "0"))
                out[bytes.fromhex(current["public_key"])] = PeerStatus(
                    endpoint=current.get("endpoint"),
                    last_handshake=float(sec) if sec else None,
                    rx_bytes=int(current.get("rx_bytes", "0")),
                    tx_bytes=int(current.get("tx_bytes", "0")),
                )

        for k, v in self._call("get=1\n\n"):
            if k == "public_key":
                flush()
                current = {}
            current[k] = v
        flush()
        return out

    # -- the tunnel ---------------------------------------------------------------------

    def attach(self, address: str, prefix: int, netns: str | None = None) -> None:
        """Give the tunnel its overlay address and bring it up, in ``netns`` (moved
        there: the UDP socket stays where wireguard-go runs) or where it was made."""
        if netns is not None and netns != self.netns:
            where = ["ip", "-n", self.netns] if self.netns is not None else ["ip"]
            _run(*where, "link", "set", self.name, "netns", netns)
        target = self.tunnel_netns = netns or self.netns
        ip = ["ip"] if target is None else ["ip", "-n", target]
        _run(*ip, "link", "set", self.name, "mtu", str(MTU))
        _run(*ip, "addr", "add", f"{address}/{prefix}", "dev", self.name)
        _run(*ip, "link", "set", self.name, "up")

    def unreachable(self, address: str) -> None:
        """Cut ``address`` (a peer that left) off where the tunnel is: new packets to it
        are answered "unreachable" at once, and every TCP connection already open to it
        is aborted. A peer that died sent no FIN or RST through a tunnel it no longer
        runs, so without the abort a process waiting on such a connection (a Ray
        owner waiting for a task's reply) waits for TCP's own timeout, a quarter of an
        hour; an ICMP unreachable is only a soft error to an established connection.
        An address is never given out again in a cluster."""
        ip = ["ip"] if self.tunnel_netns is None else ["ip", "-n", self.tunnel_netns]
        inside = [] if self.tunnel_netns is None else ["ip", "netns", "exec", self.tunnel_netns]
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _run(*ip, "route", "replace", "unreachable", f"{address}/32")
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _run(*inside, "ss", "--tcp", "--kill", "dst", address)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()


def send_from_port(source_port: int, destination: tuple[str, int], payload: bytes) -> None:
    """Send one UDP datagram from ``source_port`` (WireGuard's, which another socket
    holds) with a raw socket; the kernel picks the source address. Needs root."""
    header = struct.pack("!HHHH", source_port, destination[1], 8 + len(payload), 0)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as s:
        s.sendto(header + payload, (destination[0], 0))


def parse_endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)
