"""How many devices one control-plane process can keep alive, measured on this machine.

Run it as::

    .venv/bin/python benchmarks/heartbeats.py [--devices 10000,100000] [--database-url URL]
                                              [--json]
    .venv/bin/python benchmarks/heartbeats.py --flood [--devices 100000] [--postgres URL]

``--flood`` runs the registration flood of ``benchmarks/flood.py`` instead (see there):
100,000 registrations while a genuine client lists devices and heartbeats.

It prints four kinds of figure:

1. **Registrations per second over HTTP.** A fresh control plane (``python -m
   idlegrid.cli.main server``, its own process group, an empty database) gets about
   2,000 signed ``POST /v1/devices`` from as many fresh Ed25519 keypairs, over 32
   keep-alive connections. Each registration is a synchronous database transaction.

2. **Signed heartbeats accepted per second by one server process**, for each fleet size N
   (10,000 and 100,000 by default). N devices are bulk-inserted straight into the
   ``devices`` table (SQLAlchemy Core, after ``migrate``), each with a real Ed25519
   keypair whose public key is its id; a fresh server then loads them into its in-memory
   liveness table at startup. min(N, 50,000) heartbeats (``POST
   /v1/devices/{id}/heartbeat``, body ``{}``, round-robin over the devices) are signed
   just before sending, in chunks of at most 25,000 so that every request is sent well
   within the server's 60 s clock-skew window; signing is not timed. The raw HTTP/1.1
   request bytes are built in advance and written over 64 keep-alive connections with
   plain asyncio streams (uvloop when installed), so the load generator spends
   almost no CPU per request. A 200 counts as accepted; anything else is an error, and
   the first few error bodies are shown. The server's background flusher writes
   last-seen times and uptime to the database during the run, as it would in production.

3. **The in-process hot path**, without HTTP: in this process, a ``LivenessTable`` and a
   ``NonceStore`` with the largest N devices loaded, and the time for
   ``authenticate(...)`` + ``liveness.heartbeat(...)`` over 50,000 pre-signed
   heartbeats. That is the ceiling of the design on one core, apart from HTTP/ASGI
   overhead. Signature verification alone, and ``liveness.heartbeat`` alone, are timed
   too, to show where the time goes.

4. A summary table, and how far the HTTP heartbeat rate at the largest N is from the
   target of 1,000,000 devices heartbeating once a minute (16,667/s).

The load generator runs on the same machine and shares its cores with the server (and
with the server's flusher thread and database), so every HTTP figure is a lower bound
for a dedicated server machine. The server's and the load generator's CPU use during
each timed phase are reported, so it can be seen which of the two was saturated.

The default database is SQLite in a temporary directory. ``--database-url`` points
every phase at another database (e.g. PostgreSQL); it must be a throwaway one: the
benchmark deletes all devices in it before each phase, and refuses to start when it
holds devices that the benchmark did not create (``agent_version`` other than "bench").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import finish, machine, parse_counts
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.engine import make_url

from idlegrid.core import signing
from idlegrid.core.lifecycle import Timing
from idlegrid.localnet import LOCATIONS
from idlegrid.protocol import DeviceKind, DeviceStatus, HardwareInfo, RegisterRequest
from idlegrid.server.auth import NonceStore, authenticate
from idlegrid.server.db import make_engine, migrate
from idlegrid.server.db.models import Device, DeviceEvent, DeviceUptime
from idlegrid.server.liveness import LivenessTable
from idlegrid.worker.raynode import free_port

TARGET_DEVICES = 1_000_000
TARGET_INTERVAL_S = 60.0
TARGET_RATE = TARGET_DEVICES / TARGET_INTERVAL_S  # heartbeats per second

HEARTBEAT_INTERVAL_S = 60  # the server's setting: TTL 150 s, flush and reaper every 1 s
MAX_SKEW_S = 60.0  # the server's default max_clock_skew_s
HOST = "127.0.0.1"
SIGN_CHUNK = 25_000  # heartbeats signed at once, then sent (well within the skew window)
AGENT_VERSION = "bench"
MODEL = "cpu-intel-xeon"
HEARTBEAT_BODY = b"{}"
REGISTER_PATH = "/v1/devices"
NETWORK = "idlegrid:bench"  # what the in-process phase signs for (HTTP: the server's own)

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def cpu_hardware() -> HardwareInfo:
    """The same machine as tests/conftest.py's ``cpu_hardware``: the catalog calls it
    ``cpu-intel-xeon``."""
    return HardwareInfo(
        kind=DeviceKind.CPU,
        cpu_model="Intel(R) Xeon(R) Processor",
        cpu_cores=8,
        cpu_physical_cores=4,
        ram_mb=32768,
        disk_total_gb=500,
        disk_free_gb=200,
        os="Linux",
        os_version="6.1",
        arch="x86_64",
    )


# -- keys and signed requests --------------------------------------------------------------


@dataclass
class DeviceKeys:
    keypairs: list[Keypair]
    ids: list[str]

    @classmethod
    def generate(cls, n: int, what: str) -> DeviceKeys:
        progress(f"generating {n:,} Ed25519 keypairs for {what}")
        keypairs = [Keypair() for _ in range(n)]
        return cls(keypairs, [str(kp.pubkey()) for kp in keypairs])


def signed_headers(
    keypair: Keypair, pubkey: str, method: str, path: str, body: bytes, ts: str, network: str
) -> dict[str, str]:
    """The four signature headers, exactly as ``idlegrid.sdk.client.sign_request`` makes
    them (a fresh nonce each)."""
    nonce = secrets.token_urlsafe(18)
    message = signing.signing_message(network, method, path, body, ts, nonce)
    return {
        signing.HEADER_KEY: pubkey,
        signing.HEADER_TIMESTAMP: ts,
        signing.HEADER_NONCE: nonce,
        signing.HEADER_SIGNATURE: str(keypair.sign_message(message)),
    }


def raw_request(method: str, path: str, body: bytes, headers: dict[str, str], host: str) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def heartbeat_path(device_id: str) -> str:
    return f"/v1/devices/{device_id}/heartbeat"


def registration_requests(
    fleet: DeviceKeys, start: int, count: int, host: str, network: str, prefix: str
) -> list[bytes]:
    """Signed ``POST /v1/devices`` for devices ``start`` to ``start + count`` of
    ``fleet`` (named ``{prefix}-{i}``, each signed by its own key, now), as raw bytes."""
    hardware = cpu_hardware()
    ts = str(int(time.time()))
    out = []
    for i in range(start, start + count):
        body = (
            RegisterRequest(
                hardware=hardware,
                name=f"{prefix}-{i}",
                location=LOCATIONS[i % len(LOCATIONS)],
                agent_version=AGENT_VERSION,
            )
            .model_dump_json()
            .encode()
        )
        headers = signed_headers(
            fleet.keypairs[i], fleet.ids[i], "POST", REGISTER_PATH, body, ts, network
        )
        out.append(raw_request("POST", REGISTER_PATH, body, headers, host))
    return out


# -- the database ----------------------------------------------------------------------------


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def prepare_database(url: str) -> Engine:
    """Migrate, and empty a database given by the user (refusing one with real devices)."""
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        foreign = conn.scalar(
            select(func.count()).select_from(Device).where(Device.agent_version != AGENT_VERSION)
        )
        if foreign:
            engine.dispose()
            raise SystemExit(
                f"refusing to use {redact(url)}: it holds {foreign} device(s) this benchmark did "
                "not create; give --database-url a throwaway database"
            )
        for table in (DeviceEvent, DeviceUptime, Device):
            conn.execute(delete(table))
    return engine


def seed_devices(url: str, ids: Sequence[str], now: float, batch: int = 10_000) -> float:
    """Bulk-insert ``ids`` as up, pending CPU devices last seen at ``now``; returns seconds."""
    started = time.perf_counter()
    engine = prepare_database(url)
    hardware = cpu_hardware().model_dump(mode="json")
    table = Device.__table__
    try:
        with engine.begin() as conn:
            for start in range(0, len(ids), batch):
                rows = [
                    {
                        "id": device_id,
                        "owner": device_id,
                        "name": None,
                        "location": LOCATIONS[(start + i) % len(LOCATIONS)],
                        "status": DeviceStatus.UP.value,
                        "status_version": 0,
                        "readiness": "pending",
                        "kind": DeviceKind.CPU.value,
                        "model": MODEL,
                        "processors": 1,
                        "unsupported_reason": None,
                        "hardware": hardware,
                        "agent_version": AGENT_VERSION,
                        "registered_at": now,
                        "last_seen_at": now,
                        "uptime_s": 0.0,
                    }
                    for i, device_id in enumerate(ids[start : start + batch])
                ]
                conn.execute(insert(table), rows)
                if len(ids) > batch:
                    progress(f"  seeded {start + len(rows):,}/{len(ids):,} devices")
    finally:
        engine.dispose()
    return time.perf_counter() - started


# -- the server process ------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    startup_s: float

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/healthz", timeout=30)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def metrics(self) -> dict[str, float]:
        """The un-labelled Prometheus samples, by name."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def cpu_s(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def log_problems(self) -> list[str]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if "ERROR" in line or "Traceback" in line]


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left of it."""
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()


@contextlib.contextmanager
def running_server(
    data_dir: Path, database_url: str | None, timeout_s: float = 120.0
) -> Iterator[Server]:
    """A control-plane process in its own process group, stopped (group and all) on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDLEGRID_")}
    env.update(
        IDLEGRID_ENVIRONMENT="development",  # a SQLite file and a self-made authority key
        IDLEGRID_DATA_DIR=str(data_dir),
        IDLEGRID_PORT=str(port),
        IDLEGRID_HEARTBEAT_INTERVAL_S=str(HEARTBEAT_INTERVAL_S),
        # The registration phase measures the server, not the per-source limit (all of
        # its registrations come from this one address: 60 would pass, then 1 a second).
        IDLEGRID_REGISTRATION_RATE_PER_S="0",
        IDLEGRID_BEAT_PORT="0",  # any free one (benchmarks/beats.py reads it from an offer)
    )
    if database_url:
        env["IDLEGRID_DATABASE_URL"] = database_url
    with running_process(
        [sys.executable, "-m", "idlegrid.cli.main", "server"],
        data_dir,
        port,
        "server",
        env=env,
        timeout_s=timeout_s,
    ) as server:
        yield server


@contextlib.contextmanager
def running_process(
    argv: Sequence[str],
    data_dir: Path,
    port: int,
    name: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> Iterator[Server]:
    """``argv`` serving HTTP on ``port``, in its own process group with its output in
    ``data_dir/{name}.log``, once it answers ``/healthz``; stopped, group and all, on
    exit."""
    log_path = data_dir / f"{name}.log"
    started = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {name} exited with {proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {name} did not answer /healthz in {timeout_s:.0f}s")
            time.sleep(0.1)
        yield Server(proc, port, log_path, time.perf_counter() - started)
    finally:
        stop_process_group(proc)


# -- the HTTP load generator ---------------------------------------------------------------


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    sign_s: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    error_samples: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def merge(self, other: LoadResult) -> None:
        """Add ``other``'s counts, times and latencies to these."""
        self.sent += other.sent
        self.ok += other.ok
        self.errors += other.errors
        self.seconds += other.seconds
        self.sign_s += other.sign_s
        self.server_cpu_s += other.server_cpu_s
        self.client_cpu_s += other.client_cpu_s
        self.latencies += other.latencies
        self.error_samples += other.error_samples[: 5 - len(self.error_samples)]

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "accepted": self.ok,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "per_s": round(self.per_s, 1),
            "p50_ms": round(self.percentile_ms(0.50), 2),
            "p99_ms": round(self.percentile_ms(0.99), 2),
            "signing_s_untimed": round(self.sign_s, 2),
            "server_cpu_pct": round(100 * self.server_cpu_s / self.seconds, 1)
            if self.seconds
            else None,
            "loadgen_cpu_pct": round(100 * self.client_cpu_s / self.seconds, 1)
            if self.seconds
            else None,
            "error_samples": self.error_samples,
        }


class _Conn:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def _worker(
    conn: _Conn, port: int, requests: Iterator[bytes], ok_status: int, result: LoadResult
) -> None:
    clock = time.perf_counter
    latencies = result.latencies
    for request in requests:
        result.sent += 1
        try:
            if conn.writer is None:
                await conn.open(port)
            assert conn.reader is not None and conn.writer is not None
            started = clock()
            conn.writer.write(request)
            head = await conn.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            body = b""
            if at >= 0:
                length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
                body = await conn.reader.readexactly(length)
            latencies.append(clock() - started)
            if b"\r\nconnection: close" in lower:
                conn.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            conn.close()
            result.errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(f"connection: {exc!r}")
            continue
        if status == ok_status:
            result.ok += 1
        else:
            result.errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(f"{status}: {body[:300].decode(errors='replace')}")


async def _ticker(result: LoadResult, total: int, what: str, every_s: float = 5.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        progress(f"  {what}: {result.sent:,}/{total:,} sent, {result.errors:,} errors")


async def drive(
    server: Server,
    total: int,
    make_chunk: Callable[[int, int], list[bytes]],
    connections: int,
    ok_status: int,
    what: str,
    chunk: int = SIGN_CHUNK,
) -> LoadResult:
    """Send ``total`` requests over ``connections`` keep-alive connections. Each chunk of
    requests is built (and signed) by ``make_chunk(start, count)`` right before it is
    sent; only the sending is timed."""
    result = LoadResult()
    conns = [_Conn() for _ in range(connections)]
    await asyncio.gather(*(c.open(server.port) for c in conns))
    try:
        for start in range(0, total, chunk):
            count = min(chunk, total - start)
            signed_at = time.perf_counter()
            requests = make_chunk(start, count)
            result.sign_s += time.perf_counter() - signed_at
            progress(f"  {what}: signed {count:,} requests, sending")
            shared = iter(requests)  # the workers pull from one queue: no straggler
            ticker = asyncio.create_task(_ticker(result, total, what))
            server_cpu, client_cpu = server.cpu_s(), time.process_time()
            started = time.perf_counter()
            try:
                await asyncio.gather(
                    *(_worker(c, server.port, shared, ok_status, result) for c in conns)
                )
            finally:
                result.seconds += time.perf_counter() - started
                result.server_cpu_s += server.cpu_s() - server_cpu
                result.client_cpu_s += time.process_time() - client_cpu
                ticker.cancel()
    finally:
        for c in conns:
            c.close()
    return result


def run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# -- the phases ------------------------------------------------------------------------------


@contextlib.contextmanager
def running_bare(data_dir: Path, network: str, database_url: str | None) -> Iterator[Server]:
    """The baseline's bare registration route (bare_register.py) in its own process
    group, on ``database_url`` or a SQLite file of its own."""
    port = free_port()
    url = database_url or f"sqlite:///{data_dir / 'bare.db'}"
    script = str(Path(__file__).with_name("bare_register.py"))
    with running_process(
        [sys.executable, script, str(port), network, url], data_dir, port, "bare-route"
    ) as bare:
        yield bare


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def bench_registrations(
    work: Path, database_url: str | None, count: int, connections: int, repeats: int
) -> dict[str, Any]:
    """``repeats`` rounds of ``count`` fresh devices each, idlegrid and the bare route
    (bare_register.py, the baseline) taking turns with the same signed requests."""
    progress(
        f"registrations: {repeats} rounds of {count:,} fresh devices over {connections} "
        "connections, idlegrid and the bare route in turn"
    )
    fleets = [DeviceKeys.generate(count, f"registrations, round {r + 1}") for r in range(repeats)]
    data_dir = work / "registrations"
    data_dir.mkdir()
    if database_url:
        prepare_database(database_url).dispose()
    combined = LoadResult()
    rounds: list[float] = []
    bare_rounds: list[float] = []
    bare_errors = 0
    with running_server(data_dir, database_url) as server:
        host = f"{HOST}:{server.port}"
        network = server.health()["network"]  # what every signature names
        progress(f"  server up in {server.startup_s:.1f}s")
        with running_bare(data_dir, network, database_url) as bare:
            for r, fleet in enumerate(fleets):

                def make_chunk(start: int, n: int, fleet: DeviceKeys = fleet) -> list[bytes]:
                    return registration_requests(fleet, start, n, host, network, "bench")

                result: LoadResult = run_async(
                    drive(server, count, make_chunk, connections, 201, "registrations")
                )
                baseline: LoadResult = run_async(
                    drive(bare, count, make_chunk, connections, 201, "bare route")
                )
                rounds.append(result.per_s)
                bare_rounds.append(baseline.per_s)
                bare_errors += baseline.errors
                combined.merge(result)
                progress(
                    f"  round {r + 1}: {result.per_s:,.0f} registrations/s "
                    f"({result.errors} errors), bare route {baseline.per_s:,.0f}/s "
                    f"({baseline.errors} errors): {result.per_s / baseline.per_s:.2f}"
                )
        live = server.health()["devices_live"]
        problems = server.log_problems()
    if database_url:
        engine = make_engine(database_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS bare_devices")
        engine.dispose()
    out = combined.summary()
    ratios = [a / b for a, b in zip(rounds, bare_rounds, strict=True)]
    out.update(
        devices=count * repeats,
        connections=connections,
        devices_live_after=live,
        server_log_errors=problems,
        rounds=[round(x, 1) for x in rounds],
        spread=spread(rounds),
        bare={
            "rounds": [round(x, 1) for x in bare_rounds],
            "errors": bare_errors,
            **spread(bare_rounds),
        },
        ratio=spread(ratios),
    )
    return out


def bench_heartbeats(
    work: Path,
    database_url: str | None,
    fleet: DeviceKeys,
    n: int,
    heartbeats: int,
    connections: int,
) -> dict[str, Any]:
    ids, keypairs = fleet.ids[:n], fleet.keypairs[:n]
    sent = min(n, heartbeats)
    progress(f"heartbeats with {n:,} devices: seeding the database")
    data_dir = work / f"heartbeats-{n}"
    data_dir.mkdir()
    url = database_url or f"sqlite:///{data_dir / 'idlegrid.db'}"
    seed_s = seed_devices(url, ids, time.time())
    progress(f"  seeded {n:,} devices in {seed_s:.1f}s; starting the server")

    with running_server(data_dir, database_url) as server:
        host = f"{HOST}:{server.port}"
        network = server.health()["network"]  # what every signature names
        live_before = server.health()["devices_live"]
        progress(f"  server up in {server.startup_s:.1f}s with {live_before:,} devices live")

        def make_chunk(start: int, count: int) -> list[bytes]:
            ts = str(int(time.time()))
            out = []
            for i in range(start, start + count):
                j = i % n
                path = heartbeat_path(ids[j])
                headers = signed_headers(
                    keypairs[j], ids[j], "POST", path, HEARTBEAT_BODY, ts, network
                )
                out.append(raw_request("POST", path, HEARTBEAT_BODY, headers, host))
            return out

        result: LoadResult = run_async(
            drive(server, sent, make_chunk, connections, 200, f"{n:,} devices")
        )
        time.sleep(1.5)  # let the flusher write the last batch before reading its metrics
        metrics = server.metrics()
        live_after = server.health()["devices_live"]
        problems = server.log_problems()
    flushes = metrics.get("idlegrid_liveness_flush_seconds_count", 0.0)
    out = result.summary()
    out.update(
        devices=n,
        connections=connections,
        seed_s=round(seed_s, 2),
        server_startup_s=round(server.startup_s, 2),
        devices_live_before=live_before,
        devices_live_after=live_after,
        server_heartbeats_total=metrics.get("idlegrid_heartbeats_total"),
        flushes=int(flushes),
        flush_mean_s=round(metrics.get("idlegrid_liveness_flush_seconds_sum", 0.0) / flushes, 4)
        if flushes
        else None,
        flush_failures=metrics.get("idlegrid_liveness_flush_failures_total"),
        server_log_errors=problems,
    )
    progress(
        f"  {result.per_s:,.0f} heartbeats/s, p50 {result.percentile_ms(0.5):.1f} ms, "
        f"p99 {result.percentile_ms(0.99):.1f} ms, {result.errors} errors"
    )
    for sample in result.error_samples:
        progress(f"  error: {sample}")
    return out


def _rate(count: int, seconds: float) -> dict[str, float]:
    return {"per_s": round(count / seconds, 1), "us_each": round(1e6 * seconds / count, 2)}


def bench_in_process(fleet: DeviceKeys, n: int, heartbeats: int) -> dict[str, Any]:
    """authenticate + liveness.heartbeat in this process: no HTTP, no ASGI, one core."""
    ids, keypairs = fleet.ids[:n], fleet.keypairs[:n]
    count = min(heartbeats, 50_000)
    timing = Timing(ttl_s=2.5 * HEARTBEAT_INTERVAL_S)

    def loaded_table() -> LivenessTable:
        table = LivenessTable(timing)
        seen = time.time()
        for device_id in ids:
            table.load(device_id, DeviceStatus.UP, seen, 0)
        return table

    progress(f"in-process: loading {n:,} devices, signing {count:,} heartbeats")
    started = time.perf_counter()
    liveness = loaded_table()
    load_s = time.perf_counter() - started
    nonces = NonceStore(retention_s=2 * MAX_SKEW_S)
    ts = str(int(time.time()))
    calls = []
    for i in range(count):
        j = i % n
        path = heartbeat_path(ids[j])
        headers = signed_headers(keypairs[j], ids[j], "POST", path, HEARTBEAT_BODY, ts, NETWORK)
        calls.append((headers, path))

    progress("  timing authenticate + liveness.heartbeat")
    clock = time.time
    started = time.perf_counter()
    for headers, path in calls:
        now = clock()
        signer = authenticate(
            headers, "POST", path, HEARTBEAT_BODY, now, MAX_SKEW_S, nonces, NETWORK
        )
        liveness.heartbeat(signer, now)
    hot_s = time.perf_counter() - started
    accepted = len(liveness.drain().last_seen)

    progress("  timing signature verification alone")
    messages = [
        (
            h[signing.HEADER_KEY],
            h[signing.HEADER_SIGNATURE],
            signing.signing_message(
                NETWORK,
                "POST",
                p,
                HEARTBEAT_BODY,
                h[signing.HEADER_TIMESTAMP],
                h[signing.HEADER_NONCE],
            ),
        )
        for h, p in calls
    ]
    started = time.perf_counter()
    for pubkey, signature, message in messages:
        if not signing.verify_signature(pubkey, signature, message):
            raise AssertionError("a signature did not verify")
    verify_s = time.perf_counter() - started
    parsed = [(Pubkey.from_string(k), Signature.from_string(s), m) for k, s, m in messages]
    started = time.perf_counter()
    for key, sig, message in parsed:
        sig.verify(key, message)
    raw_verify_s = time.perf_counter() - started

    progress("  timing liveness.heartbeat alone")
    fresh = loaded_table()
    devices = [headers[signing.HEADER_KEY] for headers, _ in calls]
    started = time.perf_counter()
    for device_id in devices:
        fresh.heartbeat(device_id, clock())
    liveness_s = time.perf_counter() - started

    out = {
        "devices": n,
        "heartbeats": count,
        "devices_heartbeated": accepted,
        "load_s": round(load_s, 3),
        "authenticate_and_heartbeat": _rate(count, hot_s),
        "verify_signature": _rate(count, verify_s),
        "ed25519_verify_preparsed": _rate(count, raw_verify_s),
        "liveness_heartbeat": _rate(count, liveness_s),
    }
    progress(f"  {count / hot_s:,.0f}/s authenticate + heartbeat, {count / verify_s:,.0f}/s verify")
    return out


# -- the report ------------------------------------------------------------------------------


def target_line(results: dict[str, Any]) -> dict[str, Any]:
    runs = results["heartbeats_http"]
    largest = max(runs, key=lambda r: r["devices"])
    rate = largest["per_s"]
    ceiling = results["in_process"]["authenticate_and_heartbeat"]["per_s"]
    return {
        "target_devices": TARGET_DEVICES,
        "target_interval_s": TARGET_INTERVAL_S,
        "target_per_s": round(TARGET_RATE, 1),
        "measured_devices": largest["devices"],
        "measured_per_s": rate,
        "percent_of_target": round(100 * rate / TARGET_RATE, 1),
        "processes_needed": math.ceil(TARGET_RATE / rate) if rate else None,
        "in_process_cores_needed": math.ceil(TARGET_RATE / ceiling) if ceiling else None,
    }


def print_report(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=140)
    http = Table(title="over HTTP, one server process", title_justify="left")
    for name in ("measurement", "per s", "ok/sent", "errors", "send s", "p50 ms", "p99 ms"):
        http.add_column(name, justify="left" if name == "measurement" else "right")
    http.add_column("CPU server/loadgen", justify="right")
    http.add_column("server", justify="left")

    def add_load_row(label: str, r: dict[str, Any], server: str) -> None:
        http.add_row(
            label,
            f"{r['per_s']:,.0f}",
            f"{r['accepted']:,}/{r['sent']:,}",
            f"{r['errors']:,}",
            f"{r['seconds']:.2f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['server_cpu_pct']:.0f}% / {r['loadgen_cpu_pct']:.0f}%",
            server,
        )

    reg = results["registrations"]
    add_load_row(
        f"registrations ({reg['connections']} conns)",
        reg,
        f"{reg['devices_live_after']:,} devices live after",
    )
    for r in results["heartbeats_http"]:
        flush = (
            f"{r['flushes']} flushes of mean {r['flush_mean_s'] * 1000:.0f} ms"
            if r["flush_mean_s"] is not None
            else "no flushes"
        )
        add_load_row(
            f"heartbeats, {r['devices']:,} devices ({r['connections']} conns)",
            r,
            f"seeded in {r['seed_s']:.1f} s, up in {r['server_startup_s']:.1f} s; {flush}",
        )
    console.print(http)

    ip = results["in_process"]
    inproc = Table(
        title=f"in this process, no HTTP: {ip['heartbeats']:,} heartbeats over "
        f"{ip['devices']:,} devices, one core",
        title_justify="left",
    )
    inproc.add_column("measurement")
    inproc.add_column("per s", justify="right")
    inproc.add_column("us each", justify="right")
    for key, label in (
        ("authenticate_and_heartbeat", "authenticate + liveness.heartbeat"),
        ("verify_signature", "signing.verify_signature alone"),
        ("ed25519_verify_preparsed", "Ed25519 verify alone, key and signature pre-parsed"),
        ("liveness_heartbeat", "liveness.heartbeat alone"),
    ):
        inproc.add_row(label, f"{ip[key]['per_s']:,.0f}", f"{ip[key]['us_each']:.1f}")
    console.print(inproc)

    b, q, sp = reg["bare"], reg["ratio"], reg["spread"]
    console.print(
        f"registrations, {len(reg['rounds'])} rounds of {reg['devices'] // len(reg['rounds']):,}: "
        f"idlegrid {sp['median']:,.0f}/s ({sp['min']:,.0f}-{sp['max']:,.0f}); the bare route "
        f"(verify, parse, one row, commit; bare_register.py) {b['median']:,.0f}/s "
        f"({b['min']:,.0f}-{b['max']:,.0f}, {b['errors']} errors); ratio {q['median']:.2f} "
        f"({q['min']:.2f}-{q['max']:.2f})",
        highlight=False,
    )
    for r in [reg, *results["heartbeats_http"]]:
        for sample in r["error_samples"]:
            console.print(f"[red]error sample[/red]: {escape(sample)}", highlight=False)
        for line in r["server_log_errors"][:5]:
            console.print(f"[red]server log[/red]: {escape(line)}", highlight=False)

    t = results["target"]
    console.print(
        f"Target: {t['target_devices']:,} devices heartbeating every "
        f"{t['target_interval_s']:.0f}s = {t['target_per_s']:,.0f}/s. One server process with "
        f"{t['measured_devices']:,} devices accepted {t['measured_per_s']:,.0f}/s over HTTP: "
        f"{t['percent_of_target']:.1f}% of the target; {t['processes_needed']} processes of "
        f"this kind would be needed (the in-process hot path alone would need "
        f"{t['in_process_cores_needed']} cores).",
        highlight=False,
    )
    m = results["machine"]
    console.print(
        f"Machine: {m['cpus']} CPUs ({m['processor'] or 'unknown'}), Python {m['python']}, "
        f"database {results['database']}, {results['total_s']:.0f} s in all. The load generator "
        "shares the CPUs with the server, so the HTTP figures are lower bounds.",
        highlight=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if "--flood" in arguments:  # the registration flood lives in its own module
        import flood

        return flood.main(arguments)
    parser = argparse.ArgumentParser(
        description="Measure registrations and signed heartbeats per second of one "
        "idlegrid control-plane process on this machine."
    )
    parser.add_argument(
        "--devices",
        type=parse_counts,
        default=[10_000, 100_000],
        help="fleet sizes for the HTTP heartbeat runs (default 10000,100000); the largest "
        "is also the in-process fleet",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a THROWAWAY database for every phase (its devices are deleted); "
        "default: SQLite in a temporary directory",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--registrations", type=int, default=2_000)
    parser.add_argument(
        "--heartbeats", type=int, default=50_000, help="at most this many per fleet size"
    )
    parser.add_argument("--connections", type=int, default=64, help="for heartbeats")
    parser.add_argument("--registration-connections", type=int, default=32)
    parser.add_argument(
        "--registration-repeats",
        type=int,
        default=3,
        help="rounds of --registrations fresh devices, each beside the bare route",
    )
    parser.add_argument("--flood", action="store_true", help="the registration flood (flood.py)")
    args = parser.parse_args(arguments)

    # A SIGTERM unwinds like Ctrl-C, through every finally that stops a server.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sizes = sorted(set(args.devices))
    results: dict[str, Any] = {
        "machine": machine(
            platform=platform.platform(),
        ),
        "database": redact(args.database_url) if args.database_url else "sqlite (temporary)",
        "settings": {
            "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
            "max_clock_skew_s": MAX_SKEW_S,
            "sign_chunk": SIGN_CHUNK,
        },
    }
    try:
        with tempfile.TemporaryDirectory(prefix="idlegrid-bench-") as tmp:
            work = Path(tmp)
            results["registrations"] = bench_registrations(
                work,
                args.database_url,
                args.registrations,
                args.registration_connections,
                args.registration_repeats,
            )
            fleet = DeviceKeys.generate(max(sizes), "the seeded fleets")
            results["heartbeats_http"] = [
                bench_heartbeats(
                    work, args.database_url, fleet, n, args.heartbeats, args.connections
                )
                for n in sizes
            ]
            results["in_process"] = bench_in_process(fleet, max(sizes), args.heartbeats)
            if args.database_url:
                prepare_database(args.database_url).dispose()  # leave it empty
    except KeyboardInterrupt:
        progress("interrupted; every server has been stopped")
        return 130
    results["target"] = target_line(results)
    return finish(results, _T0, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
