"""What the per-cluster WireGuard overlay costs: TCP throughput, TCP round trips and a
Ray Data shuffle between two nodes, over three paths in the same run, on a NetLab.

    .venv/bin/python benchmarks/overlay.py [--seconds 3] [--repeats 3] [--rows 80000] [--json]

Paths (``tests/netlab.py``: namespaces, veths, NAT routers; needs root,
``wireguard-go``, ``ip``, ``nft``):

* **direct**: two plain hosts on the lab's public /24, no overlay, no NAT: the
  machine's own ceiling, the baseline every ratio is taken to.
* **overlay-direct**: two homes behind easy NATs, each with a ``wireguard-go``
  interface started inside the home's namespace (so its UDP socket is there, behind
  the NAT); each peer's endpoint is the other router's public address and WireGuard's
  listen port (masquerade keeps a free source port, so that is the mapping), checked
  by a handshake and by the endpoint WireGuard reports.
* **overlay-relayed**: two more such homes whose only endpoint is an ``idlegrid
  relay`` process on the public host; both register with signed hellos (real
  Ed25519 ticket and hello signatures) sent every 2 s from WireGuard's own port with
  ``send_from_port`` inside the home; the relay's own stats, printed when it stops,
  prove it forwarded the traffic.

For each path, per repeat (paths interleaved within a repeat): one TCP stream's
throughput (Python ``sendall`` of 1 MiB buffers for ``--seconds``; the receiver
acknowledges the byte count at the end), and small round trips (64 bytes each way,
``TCP_NODELAY``, over one established connection, for ``--seconds``; median and
p99). Then, per path, a two-node Ray cluster (head on node 1, worker on node 2,
one CPU each, bound to the path's address: the overlay address on overlay paths)
and a driver on node 1 timing ``range(rows).map_batches(pad).random_shuffle()
.materialize()`` (1 KiB per row) ``--repeats`` times after one warm-up run.
Figures are the median and min–max over repeats. Everything shares this machine's
CPUs: the sender, receiver, both ``wireguard-go`` processes and the relay compete
for them, as they would not across real machines.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from common import finish, machine, print_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from netlab import NetLab, netlab_available  # noqa: E402
from solders.keypair import Keypair  # noqa: E402

from idlegrid.core import overlay  # noqa: E402
from idlegrid.worker.wireguard import MTU, KeyPair, PeerStatus, WireGuard  # noqa: E402

PY = sys.executable
NETWORK = "benchnet"
CLUSTER = "bench"
RELAY_PORT = 3478
PERF_PORT = 5201
RAY_PORT = 6379
PATHS = ("direct", "overlay-direct", "overlay-relayed")
GOALS = {"overlay-direct": 1.15, "overlay-relayed": 2.0}

PERF_SERVER = r"""
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
def serve(c):
    with c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = c.recv(1)
        if mode == b"T":
            buf = bytearray(1 << 20)
            n = 0
            while True:
                got = c.recv_into(buf)
                if not got:
                    break
                n += got
            c.sendall(str(n).encode())
        elif mode == b"L":
            while True:
                d = c.recv(64)
                if not d:
                    break
                c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

PERF_CLIENT = r"""
import json, socket, sys, time
mode, host, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + 20
while True:
    try:
        c = socket.create_connection((host, port), timeout=10)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if mode == "T":
    buf = b"\0" * (1 << 20)
    c.sendall(b"T")
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        c.sendall(buf)
    c.shutdown(socket.SHUT_WR)
    acked = int(c.recv(64).decode())
    elapsed = time.perf_counter() - t0
    print(json.dumps({"bytes": acked, "seconds": elapsed}))
else:
    c.sendall(b"L")
    msg = b"x" * 64
    def trip():
        c.sendall(msg)
        got = 0
        while got < 64:
            d = c.recv(64 - got)
            if not d:
                raise EOFError
            got += len(d)
    for _ in range(200):
        trip()
    samples = []
    end = time.perf_counter() + seconds
    while True:
        t = time.perf_counter_ns()
        trip()
        samples.append(time.perf_counter_ns() - t)
        if t > 0 and len(samples) % 64 == 0 and time.perf_counter() > end:
            break
    samples.sort()
    print(json.dumps({
        "n": len(samples),
        "median_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
    }))
c.close()
"""

HELLO_LOOP = r"""
import sys, time
from solders.keypair import Keypair
from idlegrid.core import overlay
from idlegrid.worker.wireguard import send_from_port
net, cluster, signer_b58, key, address, expires, ticket, port, relay_ip, relay_port = sys.argv[1:]
signer = Keypair.from_base58_string(signer_b58)
while True:
    h = overlay.Hello(network=net, cluster_id=cluster, signer=str(signer.pubkey()), key=key,
                      address=address, expires=int(expires), ticket=ticket,
                      sent_ms=int(time.time() * 1000))
    sig = bytes(signer.sign_message(overlay.hello_message(h.body())))
    send_from_port(int(port), (relay_ip, int(relay_port)), overlay.encode_hello(h, sig))
    time.sleep(2)
"""

DRIVER = r"""
import json, sys, time
import numpy as np
import ray
address, node_ip, temp_dir, rows, runs = sys.argv[1:]
ray.init(address=address, _node_ip_address=node_ip, logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 60
while sum(n["Alive"] for n in ray.nodes()) < 2:
    if time.monotonic() > deadline:
        raise SystemExit("the worker node never joined")
    time.sleep(0.5)
ctx = ray.data.DataContext.get_current()
ctx.enable_progress_bars = False
ctx.print_on_execution_start = False
def pad(batch):
    n = len(batch["id"])
    batch["pad"] = np.ones((n, 128), dtype=np.float64)
    batch["node"] = np.array([ray.get_runtime_context().get_node_id()] * n)
    return batch
times = []
for _ in range(int(runs) + 1):
    t = time.perf_counter()
    ds = ray.data.range(int(rows), override_num_blocks=8).map_batches(pad).random_shuffle()
    ds = ds.materialize()
    times.append(time.perf_counter() - t)
nodes = len(set(ds.unique("node")))
rows_out = ds.count()
print(json.dumps({"warmup_s": times[0], "times_s": times[1:], "map_nodes": nodes,
                  "rows": rows_out}))
"""


def env() -> dict[str, str]:
    return {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "LOG_LEVEL": "error",
        "PYTHONPATH": str(ROOT),
    }


def check(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


class Tunnel:
    """A wireguard-go interface started inside ``ns`` (its UDP socket there too)."""

    def __init__(self, lab: NetLab, ns: str, name: str, address: str) -> None:
        self.ns, self.name, self.address = ns, name, address
        self.keys = KeyPair.generate()
        self.wg = WireGuard(name, self.keys, netns=ns)
        self.port = self.wg.listen_port
        self.wg.attach(address, 24)

    def peer(self, other: Tunnel, endpoint: str) -> None:
        self.wg.set_peer(other.keys.public, f"{other.address}/32", endpoint, keepalive_s=5)

    def status(self) -> PeerStatus:
        """Its one peer's state."""
        (only,) = self.wg.peers().values()
        return only

    def close(self) -> None:
        self.wg.close()


def handshake(lab: NetLab, a: Tunnel, b: Tunnel, endpoint_of_b: str) -> None:
    """Send datagrams into the tunnel both ways until both ends hold a session and have
    received from each other, and check a's peer endpoint is the one set."""
    poke = "import socket, sys; socket.socket(2, 2).sendto(b'x', (sys.argv[1], 9))"
    deadline = time.monotonic() + 30
    while True:
        for x, y in ((a, b), (b, a)):
            lab.run(x.ns, [PY, "-c", poke, y.address], capture_output=True, timeout=30)
        states = [t.status() for t in (a, b)]
        if all(st.last_handshake and st.rx_bytes > 0 for st in states):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"no handshake between {a.name} and {b.name}: {states}")
        time.sleep(0.5)
    endpoint = a.status().endpoint
    if endpoint != endpoint_of_b:
        raise RuntimeError(f"{a.name}: endpoint {endpoint}, not {endpoint_of_b}")


# -- the relay's members ----------------------------------------------------------------


def start_hellos(
    lab: NetLab, authority: Keypair, tunnel: Tunnel, relay_ip: str
) -> subprocess.Popen[Any]:
    signer = Keypair()
    expires = int(time.time()) + 3600
    ticket_msg = overlay.ticket_message(
        NETWORK, CLUSTER, str(signer.pubkey()), tunnel.keys.public_b64, tunnel.address, expires
    )
    ticket = base64.b64encode(bytes(authority.sign_message(ticket_msg))).decode()
    argv = [NETWORK, CLUSTER, str(signer), tunnel.keys.public_b64, tunnel.address]
    argv += [str(expires), ticket, str(tunnel.port), relay_ip, str(RELAY_PORT)]
    return lab.popen(tunnel.ns, [PY, "-c", HELLO_LOOP, *argv], env=env(), cwd=ROOT)


# -- measuring ----------------------------------------------------------------------------


class CpuMeter:
    """CPU used while a figure is taken, in % of one core: named processes (with their
    children) and the whole machine (every core busy = cpus × 100 %)."""

    def __init__(self, procs: dict[str, list[int]]) -> None:
        self.procs = {name: [psutil.Process(pid) for pid in pids] for name, pids in procs.items()}

    def _used(self) -> tuple[dict[str, float], float, float]:
        per = {}
        for name, procs in self.procs.items():
            total = 0.0
            for p in procs:
                for q in [p, *p.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        t = q.cpu_times()
                        total += t.user + t.system
            per[name] = total
        m = psutil.cpu_times()
        return per, m.user + m.nice + m.system + m.irq + m.softirq, time.monotonic()

    def __enter__(self) -> CpuMeter:
        self._start = self._used()
        return self

    def __exit__(self, *exc: object) -> None:
        (p0, m0, t0), (p1, m1, t1) = self._start, self._used()
        wall = t1 - t0
        self.percent = {name: 100 * (p1[name] - p0[name]) / wall for name in p0}
        self.percent["machine"] = 100 * (m1 - m0) / wall


def perf(lab: NetLab, ns: str, mode: str, host: str, seconds: float) -> dict[str, Any]:
    argv = [PY, "-c", PERF_CLIENT, mode, host, str(PERF_PORT), str(seconds)]
    done = lab.run(ns, argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"perf client {mode} to {host}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def kill_ray(lab: NetLab, procs: list[subprocess.Popen[Any]], spaces: list[str]) -> None:
    """Kill the Ray nodes' process groups, then any Ray process left in their namespaces."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    for ns in spaces:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"ray" in cmd and b"wireguard" not in cmd:
                    os.kill(int(pid), signal.SIGKILL)


def ray_job(
    lab: NetLab, path: str, n1: tuple[str, str], n2: tuple[str, str], rows: int, runs: int
) -> dict[str, Any]:
    (ns1, ip1), (ns2, ip2) = n1, n2
    tag = {"direct": "d", "overlay-direct": "o", "overlay-relayed": "r"}[path]
    base = Path(tempfile.mkdtemp(prefix=f"rb{tag}", dir="/tmp"))
    common = ["--block", "--object-store-memory", "100000000", "--num-cpus", "1"]
    common += ["--disable-usage-stats"]
    procs: list[subprocess.Popen[Any]] = []
    logs = []
    try:
        for i, (ns, ip, extra) in enumerate(
            (
                (ns1, ip1, ["--head", "--port", str(RAY_PORT), "--include-dashboard", "false"]),
                (ns2, ip2, ["--address", f"{ip1}:{RAY_PORT}"]),
            )
        ):
            log = open(base / f"node{i}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            argv = [str(Path(PY).parent / "ray"), "start", *extra, "--node-ip-address", ip]
            argv += [*common, "--temp-dir", str(base / f"t{i}")]
            procs.append(
                lab.popen(ns, argv, env=env(), stdout=log, stderr=log, start_new_session=True)
            )
            if i == 0:
                time.sleep(3)  # the head's GCS first
        argv = [PY, "-c", DRIVER, f"{ip1}:{RAY_PORT}", ip1, str(base / "t0"), str(rows), str(runs)]
        started = time.monotonic()
        done = lab.run(ns1, argv, capture_output=True, text=True, timeout=600, env=env())
        if done.returncode != 0:
            tail = [(base / f"node{i}.log").read_text(errors="replace")[-400:] for i in (0, 1)]
            return {"error": done.stderr.strip()[-800:], "node_logs": tail}
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        out["driver_wall_s"] = round(time.monotonic() - started, 1)
        return out
    except (subprocess.TimeoutExpired, RuntimeError, ValueError) as exc:
        return {"error": repr(exc)}
    finally:
        kill_ray(lab, procs, [ns1, ns2])
        for log in logs:
            log.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)


def wireguard_go_version() -> str:
    done = subprocess.run(["wireguard-go", "--version"], capture_output=True, text=True)
    return done.stdout.split()[1] if done.stdout.split()[1:] else "unknown"


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    net = overlay.cluster_network(CLUSTER)
    addr = [str(net[i]) for i in (2, 3, 4, 5)]
    authority = Keypair()
    results: dict[str, Any] = {
        "machine": machine(wireguard_go=wireguard_go_version(), loadavg_at_start=os.getloadavg()),
        "seconds": args.seconds,
        "repeats": args.repeats,
        "rows": args.rows,
        "mtu": MTU,
        "paths": {p: {"throughput": [], "latency": [], "cpu": []} for p in PATHS},
    }
    tunnels: list[Tunnel] = []
    with NetLab() as lab:
        try:
            ha, hb = lab.add_host("a"), lab.add_host("b")
            homes = [lab.add_home(f"h{i}", "easy") for i in (1, 2, 3, 4)]
            tag = lab.prefix[2:]
            for i, home in enumerate(homes):
                tunnels.append(Tunnel(lab, home.ns, f"igb{tag}{i}", addr[i]))
            t1, t2, t3, t4 = tunnels
            # overlay-direct: each peer at the other's NAT mapping (router ip : wg port).
            e2, e1 = f"{homes[1].public_ip}:{t2.port}", f"{homes[0].public_ip}:{t1.port}"
            t1.peer(t2, e2)
            t2.peer(t1, e1)
            handshake(lab, t1, t2, e2)
            handshake(lab, t2, t1, e1)
            # overlay-relayed: a relay on the public host, hellos from each wg port.
            relay_log = Path(tempfile.mkstemp(prefix="igrelay", suffix=".log")[1])
            relay_out = open(relay_log, "wb")  # noqa: SIM115 - closed below
            relay = lab.popen(
                lab.public,
                [
                    PY,
                    "-m",
                    "idlegrid.cli.main",
                    "relay",
                    "--listen",
                    f"0.0.0.0:{RELAY_PORT}",
                    "--network",
                    NETWORK,
                    "--authority",
                    str(authority.pubkey()),
                ],
                env=env(),
                cwd=ROOT,
                stdout=relay_out,
                stderr=relay_out,
            )
            time.sleep(2)
            for t in (t3, t4):
                start_hellos(lab, authority, t, lab.public_ip)
            time.sleep(1)
            er = f"{lab.public_ip}:{RELAY_PORT}"
            t3.peer(t4, er)
            t4.peer(t3, er)
            handshake(lab, t3, t4, er)
            handshake(lab, t4, t3, er)
            ends = {
                "direct": ((ha.ns, ha.ip), (hb.ns, hb.ip)),
                "overlay-direct": ((t1.ns, t1.address), (t2.ns, t2.address)),
                "overlay-relayed": ((t3.ns, t3.address), (t4.ns, t4.address)),
            }
            for _, (ns2, ip2) in ends.values():
                lab.popen(ns2, [PY, "-c", PERF_SERVER, ip2, str(PERF_PORT)])
            time.sleep(1)
            # What uses the CPU while a path carries its stream.
            busy = {
                "direct": {},
                "overlay-direct": {"wireguard-go": [t1.wg.proc.pid, t2.wg.proc.pid]},
                "overlay-relayed": {
                    "wireguard-go": [t3.wg.proc.pid, t4.wg.proc.pid],
                    "relay": [relay.pid],
                },
            }
            for r in range(args.repeats):
                for path, ((ns1, _), (_, ip2)) in ends.items():
                    with CpuMeter(busy[path]) as cpu:
                        tp = perf(lab, ns1, "T", ip2, args.seconds)
                    results["paths"][path]["cpu"].append(cpu.percent)
                    lat = perf(lab, ns1, "L", ip2, args.seconds)
                    results["paths"][path]["throughput"].append(tp["bytes"] / tp["seconds"] / 1e6)
                    results["paths"][path]["latency"].append(lat)
                    print(
                        f"  repeat {r + 1} {path}: {tp['bytes'] / tp['seconds'] / 1e6:.0f} MB/s,"
                        f" rtt median {lat['median_us']:.0f} us",
                        file=sys.stderr,
                    )
            # The tunnels really stayed on their paths.
            results["endpoints"] = {
                "overlay-direct": [t1.status().endpoint, t2.status().endpoint],
                "overlay-relayed": [t3.status().endpoint, t4.status().endpoint],
            }
            if not args.no_ray:
                for path, (n1, n2) in ends.items():
                    print(f"  ray job on {path} ...", file=sys.stderr)
                    results["paths"][path]["ray"] = ray_job(
                        lab, path, n1, n2, args.rows, args.repeats
                    )
            relay.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                relay.wait(10)
            relay_out.close()
            for line in relay_log.read_text(errors="replace").splitlines():
                if "relay stopped; stats" in line:
                    results["relay_stats"] = line.split("stats", 1)[1].strip()
            relay_log.unlink()
        finally:
            for t in tunnels:
                t.close()
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    return results


def summarize(results: dict[str, Any]) -> None:
    for data in results["paths"].values():
        data["throughput_mb_s"] = spread(data.pop("throughput"))
        lat = data.pop("latency")
        data["rtt_median_us"] = spread([x["median_us"] for x in lat])
        data["rtt_p99_us"] = spread([x["p99_us"] for x in lat])
        data["round_trips"] = sum(x["n"] for x in lat)
        cpu = data.pop("cpu")
        data["cpu_percent"] = {k: spread([c[k] for c in cpu]) for k in cpu[0]} if cpu else {}
        ray = data.get("ray")
        if ray and "times_s" in ray:
            data["ray_s"] = spread(ray["times_s"])
    base = results["paths"]["direct"]
    verdicts: dict[str, Any] = {}
    for path, goal in GOALS.items():
        d = results["paths"][path]
        v: dict[str, Any] = {
            "goal": goal,
            "throughput_x": base["throughput_mb_s"]["median"] / d["throughput_mb_s"]["median"],
            "rtt_x": d["rtt_median_us"]["median"] / base["rtt_median_us"]["median"],
        }
        if "ray_s" in d and "ray_s" in base:
            v["ray_x"] = d["ray_s"]["median"] / base["ray_s"]["median"]
        v["met"] = {k: v[k] <= goal for k in ("throughput_x", "rtt_x", "ray_x") if k in v}
        verdicts[path] = v
    results["vs_direct"] = verdicts


def fmt(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}–{s['max']:,.{digits}f})"


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"overlay benchmark: {m['cpus']} CPUs, {m['processor']}, Python {m['python']};"
        f" {results['repeats']} repeats of {results['seconds']} s per figure, MTU {results['mtu']},"
        f" wireguard-go {m['wireguard_go']}; load average {m['loadavg_at_start'][0]:.1f} at"
        f" start, {m['loadavg_at_end'][0]:.1f} at end"
    )
    rows = []
    for path, d in results["paths"].items():
        ray = d.get("ray") or {}
        if "ray_s" in d:
            ray_cell = f"{fmt(d['ray_s'], 2)} [{ray['map_nodes']} nodes]"
        else:
            ray_cell = "failed" if "error" in ray else "not run"
        rows.append(
            [
                path,
                fmt(d["throughput_mb_s"]),
                fmt(d["rtt_median_us"]),
                fmt(d["rtt_p99_us"]),
                ray_cell,
            ]
        )
    print_table(
        "median (min–max) over repeats",
        "lrrrr",
        [
            "path",
            "TCP MB/s",
            "RTT median µs",
            "RTT p99 µs",
            f"Ray shuffle {results['rows']:,} rows, s",
        ],
        rows,
    )
    vrows = []
    for path, v in results["vs_direct"].items():
        met = v["met"]
        cells = [path, f"≤ {v['goal']:.2f}x"]
        for k in ("throughput_x", "rtt_x", "ray_x"):
            cells.append(f"{v[k]:.2f}x {'met' if met[k] else 'MISSED'}" if k in v else "-")
        vrows.append(cells)
    print_table(
        "vs direct (throughput: direct/path; RTT and Ray: path/direct; goal as a factor)",
        "lrrrr",
        ["path", "goal", "throughput", "RTT median", "Ray job"],
        vrows,
    )
    cpus = results["machine"]["cpus"]
    print(
        f"\nCPU during the throughput figure, % of one core (the machine has {cpus}:"
        f" {cpus * 100} % is every core busy), median (min–max):"
    )
    for path, d in results["paths"].items():
        cells = [f"{k} {fmt(v)}" for k, v in d["cpu_percent"].items()]
        print(f"  {path}: {', '.join(cells)}")
    print(f"\nendpoints WireGuard used: {results.get('endpoints')}")
    print(f"relay stats at stop: {results.get('relay_stats', 'not seen')}")
    for path, d in results["paths"].items():
        ray = d.get("ray") or {}
        if "error" in ray:
            print(f"Ray on {path} failed: {ray['error']}")
        elif ray:
            print(
                f"Ray on {path}: warm-up {ray['warmup_s']:.2f} s, map tasks ran on"
                f" {ray['map_nodes']} node(s), {ray['rows']:,} rows out"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput/RTT figure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=80_000, help="Ray job rows (1 KiB each)")
    parser.add_argument("--no-ray", action="store_true", help="network figures only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = netlab_available()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = run(args)
    summarize(results)
    return finish(results, started, args.json, report)


if __name__ == "__main__":
    sys.exit(main())
