"""Heartbeats as beats (core/beats.py): how many one control-plane process takes a
second, beside a bare UDP echo of the same packets, the machine's ceiling.

Run it as::

    .venv/bin/python benchmarks/beats.py [--devices 20000] [--beats 200000] [--repeats 3]
                                         [--window 256] [--database-url URL] [--json]

The fleet is seeded straight into the database (as in heartbeats.py) and a fresh
server (``idlegrid server``, its own process group) loads it. Each device then opens
a beat session with one signed HTTP heartbeat carrying a fresh X25519 key (timed:
handshakes a second), and derives its keys from the offer as an agent does. The
timed region is what the network waits for: beats (round robin over the devices,
counters rising, made just before) written to the server's UDP port from one
socket with at most ``--window`` unanswered, until every ack is in or lost, and
acks counted. The baseline, in the same run, is a bare asyncio (uvloop) UDP echo
in its own process (the same 4 MiB receive buffer) answering each 48-byte datagram
with 42 bytes naming its session and counter, driven by the
same loop with the same packets: what one Python process can answer at all. Each
is repeated; medians, min–max and the ratio are printed, with both processes' CPU.
The server's own heartbeat counter must rise by the acks counted.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import finish, machine
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from heartbeats import (
    HOST,
    TARGET_RATE,
    DeviceKeys,
    heartbeat_path,
    progress,
    running_server,
    seed_devices,
    signed_headers,
    stop_process_group,
)

from idlegrid.core import beats
from idlegrid.protocol import HeartbeatRequest, HeartbeatResponse

ECHO = """
import asyncio, socket, sys
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
PAD = bytes(22)
class Echo(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, addr):
        # 42 bytes naming the beat's session and counter, as a real ack does
        if len(data) == 48: self.t.sendto(b"IGA1" + data[4:20] + PAD, addr)
async def main():
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    print(t.get_extra_info("sockname")[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def open_sessions(url: str, fleet: DeviceKeys, network: str) -> tuple[list[Any], float]:
    """One signed HTTP heartbeat per device asking for a session; the keys each derives."""
    out = []
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=30) as http:
        for i, (kp, device_id) in enumerate(zip(fleet.keypairs, fleet.ids, strict=True)):
            private = X25519PrivateKey.generate()
            mine = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            body = HeartbeatRequest(beat_key=mine.hex()).model_dump_json().encode()
            path = heartbeat_path(device_id)
            ts = str(int(time.time()))
            headers = signed_headers(kp, device_id, "POST", path, body, ts, network)
            headers["Content-Type"] = "application/json"
            resp = http.post(path, content=body, headers=headers)
            resp.raise_for_status()
            offer = HeartbeatResponse.model_validate_json(resp.content).beat
            assert offer is not None, "the server offered no beat session"
            theirs = bytes.fromhex(offer.server_key)
            session = bytes.fromhex(offer.session)
            keys = beats.session_keys(
                private.exchange(X25519PublicKey.from_public_bytes(theirs)),
                network=network,
                device_id=device_id,
                session=session,
                device_key=mine,
                server_key=theirs,
            )
            out.append((session, keys.up, offer.port))
            if (i + 1) % 5000 == 0:
                progress(f"  {i + 1:,} sessions open")
    return out, time.perf_counter() - started


def make_beats(sessions: list[Any], count: int, first_counter: int) -> list[bytes]:
    now_ms = int(time.time() * 1000)
    n = len(sessions)
    return [
        beats.encode_beat(
            sessions[i % n][1], sessions[i % n][0], first_counter + i // n, now_ms, 5.0, None
        )
        for i in range(count)
    ]


def blast(port: int, packets: list[bytes], window: int, pid: int) -> dict[str, Any]:
    """Send every packet with at most ``window`` unanswered; count the acks.

    Acks are matched to their beat by session and counter (bytes 4..20 of both),
    so an ack that arrives after its beat was given up for the window is still
    counted once, and only beats never answered by the end are lost.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect((HOST, port))
    sock.settimeout(0.5)
    server, me = psutil.Process(pid), psutil.Process()
    cpu0 = sum(server.cpu_times()[:2]), sum(me.cpu_times()[:2])
    waiting: set[bytes] = set()  # counted against the window
    given_up: set[bytes] = set()  # timed out, still matched if they come late
    acked = late = i = 0
    started = time.perf_counter()
    total = len(packets)
    try:
        while i < total or waiting:
            while len(waiting) < window and i < total:
                sock.send(packets[i])
                waiting.add(packets[i][4:20])
                i += 1
            try:
                ack = sock.recv(64)
            except TimeoutError:
                given_up |= waiting
                waiting.clear()
                continue
            if len(ack) != beats.ACK_BYTES:
                continue
            name = ack[4:20]
            if name in waiting:
                waiting.discard(name)
                acked += 1
            elif name in given_up:
                given_up.discard(name)
                acked += 1
                late += 1
        seconds = time.perf_counter() - started
        timed = acked
        with contextlib.suppress(TimeoutError):  # the last stragglers, outside the clock
            while given_up:
                ack = sock.recv(64)
                if ack[4:20] in given_up:
                    given_up.discard(ack[4:20])
                    acked += 1
                    late += 1
    finally:
        sock.close()
    cpu1 = sum(server.cpu_times()[:2]), sum(me.cpu_times()[:2])
    return {
        "sent": total,
        "acked": acked,
        "late": late,
        "lost": len(given_up),
        "seconds": round(seconds, 3),
        "per_s": round(timed / seconds, 1),
        "server_cpu_pct": round(100 * (cpu1[0] - cpu0[0]) / seconds, 1),
        "client_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / seconds, 1),
    }


def spread(runs: list[dict[str, Any]]) -> dict[str, float]:
    rates = [r["per_s"] for r in runs]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    fleet = DeviceKeys.generate(args.devices, "the fleet")
    results: dict[str, Any] = {"machine": machine(), "devices": args.devices}
    with tempfile.TemporaryDirectory(prefix="idlegrid-beats-") as tmp:
        work = Path(tmp)
        url = args.database_url or f"sqlite:///{work / 'idlegrid.db'}"
        seed_devices(url, fleet.ids, time.time())
        echo = subprocess.Popen(
            [sys.executable, "-c", ECHO], stdout=subprocess.PIPE, start_new_session=True
        )
        try:
            assert echo.stdout is not None
            echo_port = int(echo.stdout.readline())
            with running_server(work, args.database_url) as server:
                network = server.health()["network"]
                progress(f"opening {args.devices:,} beat sessions over signed HTTP")
                sessions, handshake_s = open_sessions(server.url, fleet, network)
                port = sessions[0][2]
                results["handshakes_per_s"] = round(len(sessions) / handshake_s, 1)
                before = server.metrics().get("idlegrid_heartbeats_total", 0.0)
                idlegrid_runs, bare_runs = [], []
                for r in range(args.repeats):
                    packets = make_beats(
                        sessions, args.beats, 1 + r * (args.beats // len(sessions) + 1)
                    )
                    idlegrid_runs.append(blast(port, packets, args.window, server.proc.pid))
                    bare_runs.append(blast(echo_port, packets, args.window, echo.pid))
                    progress(
                        f"  repeat {r + 1}: idlegrid {idlegrid_runs[-1]['per_s']:,.0f}/s, "
                        f"bare echo {bare_runs[-1]['per_s']:,.0f}/s"
                    )
                counted = server.metrics().get("idlegrid_heartbeats_total", 0.0) - before
                results["server_counted"] = int(counted)
                results["acks_counted"] = sum(r["acked"] for r in idlegrid_runs)
                results["devices_live"] = server.health()["devices_live"]
                results["server_log_errors"] = server.log_problems()
        finally:
            stop_process_group(echo)
    results["idlegrid"] = {"runs": idlegrid_runs, **spread(idlegrid_runs)}
    results["bare"] = {"runs": bare_runs, **spread(bare_runs)}
    ratios = [a["per_s"] / b["per_s"] for a, b in zip(idlegrid_runs, bare_runs, strict=True)]
    results["ratio"] = {
        "median": round(statistics.median(ratios), 2),
        "min": round(min(ratios), 2),
        "max": round(max(ratios), 2),
    }
    results["target_per_s"] = round(TARGET_RATE)
    return results


def print_report(r: dict[str, Any]) -> None:
    i, b, q = r["idlegrid"], r["bare"], r["ratio"]
    print(f"beats, {r['devices']:,} devices, one server process ({r['machine']['cpus']} CPUs)")
    print(f"  handshakes (signed HTTP heartbeat + X25519): {r['handshakes_per_s']:,.0f}/s")
    print(f"  idlegrid beats:  {i['median']:,.0f}/s ({i['min']:,.0f}-{i['max']:,.0f})")
    print(f"  bare UDP echo:   {b['median']:,.0f}/s ({b['min']:,.0f}-{b['max']:,.0f})")
    print(f"  ratio:           {q['median']:.2f} ({q['min']:.2f}-{q['max']:.2f})")
    for label, runs in (("idlegrid", i["runs"]), ("bare", b["runs"])):
        for run_ in runs:
            print(
                f"    {label}: {run_['acked']:,}/{run_['sent']:,} acked ({run_['late']} late), "
                f"lost {run_['lost']}, "
                f"server CPU {run_['server_cpu_pct']}%, client CPU {run_['client_cpu_pct']}%"
            )
    print(
        f"  the server counted {r['server_counted']:,} heartbeats for {r['acks_counted']:,} acks; "
        f"{r['devices_live']:,} devices live; goal {r['target_per_s']:,}/s: "
        + ("met" if i["median"] >= r["target_per_s"] else "not met")
    )
    for line in r["server_log_errors"]:
        print(f"  server log: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--beats", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        return finish(run(args), started, args.json, print_report)
    return 130


if __name__ == "__main__":
    sys.exit(main())
