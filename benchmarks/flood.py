"""A registration flood, and what a genuine user of the network sees during it.

Run it as::

    .venv/bin/python benchmarks/heartbeats.py --flood [--devices 100000]
                                              [--postgres URL] [--json]

(or ``benchmarks/flood.py`` with the same options). An attacker registers fresh
devices as fast as it can: 100,000 by default, each from its own Ed25519 keypair,
signed ``POST /v1/devices`` over 32 keep-alive connections (the load generator of
``heartbeats.py``). Beside it, in a process of its own, a genuine client lists the
network's devices (``GET /v1/devices``, the first page, four times a second) and
heartbeats a device of its own once a second; two genuine local agents
(``idlegrid worker start``, as the local network starts them, each claiming its
share of this machine's cores) join when the flood begins, and must prove their
compute and become ``cluster_ready`` while it runs.

It prints registrations per second, the genuine client's p50/p99 for each call
on the quiet server (the baseline, measured first for ``--quiet-s``) and during
the flood, their ratio, how long each genuine agent took to become
``cluster_ready`` and what its proofs said, and every ERROR line of the server's
log. The goal (issue 17): the genuine client's p99 under 500 ms during the
flood, and the genuine agents ready.

SQLite is a file in a temporary directory. ``--postgres URL`` runs against a
fresh database created beside URL's (``CREATE DATABASE``) and dropped at the end;
nothing already in that server is read or written.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from common import finish, machine, print_table
from heartbeats import (
    HOST,
    DeviceKeys,
    LoadResult,
    Server,
    cpu_hardware,
    drive,
    progress,
    redact,
    registration_requests,
    run_async,
)
from solders.keypair import Keypair
from sqlalchemy import create_engine, text

from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import RegisterRequest
from idlegrid.sdk import Client
from idlegrid.worker.raynode import free_port

# Registrations are signed in chunks just before they are sent; at a few hundred a
# second a chunk must be small to be sent well within the 60 s clock-skew window.
SIGN_CHUNK = 2_000
LIST_EVERY_S = 0.25
HEARTBEAT_EVERY_S = 1.0
REQUEST_TIMEOUT_S = 30.0
GOAL_P99_MS = 500.0
AGENTS = 2
MIN_UPTIME_S = 10  # a genuine agent is ready after a passed proof and this much uptime


# -- the genuine client (its own process, so the load generator cannot slow it) -----------


def genuine_client(url: str, stop: Any, results: Any) -> None:
    """List devices and heartbeat one device until ``stop`` is set; put the samples
    ``(kind, at, seconds, status)`` on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it through ``stop``
    samples: list[tuple[str, float, float, int]] = []
    me = Keypair()
    device = str(me.pubkey())
    with (
        Client(url, keypair=me, timeout_s=REQUEST_TIMEOUT_S) as owner,
        httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as anyone,
    ):
        owner.register_device(RegisterRequest(hardware=cpu_hardware(), name="genuine"))
        next_beat = 0.0
        while not stop.is_set():
            at = time.time()
            started = time.perf_counter()
            try:
                status = anyone.get("/v1/devices", params={"limit": 100}).status_code
            except httpx.HTTPError:
                status = 0
            samples.append(("list", at, time.perf_counter() - started, status))
            if at >= next_beat:
                next_beat = at + HEARTBEAT_EVERY_S
                started = time.perf_counter()
                try:
                    owner.heartbeat(device)
                    status = 200
                except Exception:  # an error reply or a timeout: counted, not fatal
                    status = 0
                samples.append(("heartbeat", at, time.perf_counter() - started, status))
            stop.wait(max(0.0, LIST_EVERY_S - (time.time() - at)))
    results.put(samples)


def latency_summary(samples: Sequence[tuple[str, float, float, int]]) -> dict[str, Any]:
    seconds = sorted(s for _, _, s, _ in samples)
    if not seconds:
        return {"calls": 0}

    def pct(q: float) -> float:
        return round(1000 * seconds[min(len(seconds) - 1, int(q * len(seconds)))], 1)

    return {
        "calls": len(seconds),
        "errors": sum(1 for *_, status in samples if status != 200),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * seconds[-1], 1),
    }


# -- databases -----------------------------------------------------------------------


@contextlib.contextmanager
def scratch_postgres(url: str) -> Iterator[str]:
    """A fresh database on URL's server, dropped afterwards (even after Ctrl-C)."""
    name = f"idlegrid_flood_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{url.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- the run ---------------------------------------------------------------------------


def agent_readiness(url: str, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    with Client(url, timeout_s=REQUEST_TIMEOUT_S) as api:
        for device_id in device_ids:
            with contextlib.suppress(Exception):  # not registered yet
                out[device_id] = {"readiness": api.get_device(device_id).readiness}
    return out


def proof_history(url: str, device_id: str) -> list[str]:
    with Client(url, timeout_s=REQUEST_TIMEOUT_S) as api:
        return [
            str(p.status) if not p.reason else f"{p.status}:{p.reason}"
            for p in api.proofs(device_id).items
        ]


def run_flood(
    work: Path, database_url: str | None, devices: int, connections: int, quiet_s: float
) -> dict[str, Any]:
    fleet = DeviceKeys.generate(devices, "the flood")
    # No per-source limit: the worst case, an attacker with as many addresses as devices.
    env = {"IDLEGRID_ENVIRONMENT": "development", "IDLEGRID_REGISTRATION_RATE_PER_S": "0"}
    if database_url:
        env["IDLEGRID_DATABASE_URL"] = database_url
    net = LocalNetwork(
        work / "network", port=free_port(), workers=AGENTS, min_uptime_s=MIN_UPTIME_S, env=env
    )
    ctx = mp.get_context("spawn")
    stop, samples_queue = ctx.Event(), ctx.Queue()
    out: dict[str, Any] = {"devices": devices, "connections": connections}
    try:
        net.start_server(timeout_s=120)
        assert net.server is not None
        server = Server(net.server, net.port, work / "network" / "logs" / "server.log", 0.0)
        host = f"{HOST}:{net.port}"
        network = server.health()["network"]
        client = ctx.Process(target=genuine_client, args=(net.server_url, stop, samples_queue))
        client.start()
        progress(f"the genuine client alone for {quiet_s:.0f}s (the baseline)")
        time.sleep(quiet_s)

        def make_chunk(start: int, n: int) -> list[bytes]:
            return registration_requests(fleet, start, n, host, network, "flood")

        flood_started = time.time()
        for index in range(AGENTS):
            net.start_worker(index)
        ready_at: dict[str, float] = {}
        flooding = threading.Event()
        flooding.set()

        def all_ready() -> bool:
            with contextlib.suppress(Exception):  # keypairs not written yet, a slow reply
                genuine = [net.device_id(i) for i in range(AGENTS)]
                for device_id, seen in agent_readiness(net.server_url, genuine).items():
                    if seen["readiness"] in ("cluster_ready", "hired"):
                        ready_at.setdefault(device_id, time.time())
            return len(ready_at) == AGENTS

        def watch() -> None:  # when each genuine agent is ready, read during the flood
            while flooding.is_set() and not all_ready():
                time.sleep(1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        progress(f"flood: {devices:,} registrations; {AGENTS} genuine agents joining")
        result: LoadResult = run_async(
            drive(server, devices, make_chunk, connections, 201, "flood", chunk=SIGN_CHUNK)
        )
        flood_ended = time.time()
        flooding.clear()
        watcher.join()
        genuine = [net.device_id(i) for i in range(AGENTS)]
        # Agents still proving when the flood ends get a deadline of their own.
        with contextlib.suppress(TimeoutError):
            net.wait_for(all_ready, 300, "the genuine agents to become cluster_ready", poll_s=1)
        stop.set()
        samples = samples_queue.get(timeout=60)
        client.join(30)
        quiet = [s for s in samples if s[1] < flood_started]
        during = [s for s in samples if flood_started <= s[1] <= flood_ended]
        out["registrations"] = result.summary()
        out["genuine_client"] = {
            kind: {
                "quiet": latency_summary([s for s in quiet if s[0] == kind]),
                "flood": latency_summary([s for s in during if s[0] == kind]),
            }
            for kind in ("list", "heartbeat")
        }
        out["agents"] = [
            {
                "device": device_id,
                "ready_after_s": round(ready_at[device_id] - flood_started, 1)
                if device_id in ready_at
                else None,
                "ready_during_flood": ready_at.get(device_id, float("inf")) <= flood_ended,
                "proofs": proof_history(net.server_url, device_id),
            }
            for device_id in genuine
        ]
        out["server_log_errors"] = server.log_problems()[:20]
    finally:
        stop.set()
        net.close()
    return out


def print_report(results: dict[str, Any]) -> None:
    for run in results["runs"]:
        reg = run["registrations"]
        print(
            f"\n{run['database']}: {reg['accepted']:,} of {run['devices']:,} registrations "
            f"in {reg['seconds']:.0f}s = {reg['per_s']:,.0f}/s ({reg['errors']} errors, "
            f"server CPU {reg['server_cpu_pct']}%)"
        )
        rows = []
        for kind, phases in run["genuine_client"].items():
            q, f = phases["quiet"], phases["flood"]
            ratio = f["p99_ms"] / q["p99_ms"] if q.get("p99_ms") and f.get("p99_ms") else None
            rows.append(
                [
                    kind,
                    f"{q.get('p50_ms', '-')}",
                    f"{q.get('p99_ms', '-')}",
                    f"{f.get('p50_ms', '-')}",
                    f"{f.get('p99_ms', '-')}",
                    f"{f.get('max_ms', '-')}",
                    f"{ratio:.1f}x" if ratio else "-",
                    f"{f.get('errors', 0)}/{f.get('calls', 0)}",
                    "yes" if f.get("p99_ms", 1e9) < GOAL_P99_MS else "NO",
                ]
            )
        print_table(
            "the genuine client (ms)",
            "lrrrrrrrl",
            [
                "call",
                "quiet p50",
                "quiet p99",
                "flood p50",
                "flood p99",
                "max",
                "p99 ratio",
                "errors",
                f"p99<{GOAL_P99_MS:.0f}",
            ],
            rows,
        )
        for agent in run["agents"]:
            when = (
                f"cluster_ready {agent['ready_after_s']}s after the flood began"
                f"{' (during it)' if agent['ready_during_flood'] else ' (after it)'}"
                if agent["ready_after_s"] is not None
                else "NOT cluster_ready"
            )
            print(f"genuine agent {agent['device'][:8]}…: {when}; proofs {agent['proofs']}")
        for line in run["server_log_errors"]:
            print(f"server log: {line}")
    print(f"\ntotal {results['total_s']}s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", action="store_true", help="(accepted for heartbeats.py)")
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--quiet-s", type=float, default=20.0)
    parser.add_argument(
        "--postgres",
        default=None,
        help="also run on PostgreSQL, in a scratch database created beside this URL's",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine(), "runs": []}
    try:
        with tempfile.TemporaryDirectory(prefix="idlegrid-flood-") as tmp:
            work = Path(tmp)
            progress("SQLite")
            (work / "sqlite").mkdir()
            run = run_flood(work / "sqlite", None, args.devices, args.connections, args.quiet_s)
            results["runs"].append({"database": "sqlite", **run})
            if args.postgres:
                progress(f"PostgreSQL beside {redact(args.postgres)}")
                (work / "postgres").mkdir()
                with scratch_postgres(args.postgres) as url:
                    run = run_flood(
                        work / "postgres", url, args.devices, args.connections, args.quiet_s
                    )
                results["runs"].append({"database": "postgresql", **run})
    except KeyboardInterrupt:
        progress("interrupted; every process has been stopped")
        return 130
    return finish(results, started, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
