"""Three attacks on a real control-plane process, and what each costs it (issue 14).

Run it as::

    .venv/bin/python benchmarks/abuse.py [--devices 100000] [--postgres URL] [--json]

Each attack meets a fresh server process (``idlegrid server`` in development mode,
as ``idlegrid up`` starts it) over a SQLite file, or with ``--postgres URL`` over a
scratch database created beside URL's and dropped at the end.

1. **Memory under oversized uploads.** The server's resident set (psutil, the
   process and its children, every 10 ms) idle, then while 50 clients at once each
   send a 32 MiB body (the speed test's limit) or more with a missing or bad
   signature, attack by attack: unsigned, over the limit, chunked, signed by a
   stranger's key, naming a registered device's public key (any client can list
   them) with a signature that does not verify, and the same at the registration
   route. Printed per attack: the answers (status and code), how soon they came
   and how much of its body each client had sent by then, whether the server cut
   the connection or read the rest and threw it away, and the peak resident set
   against the idle one. The server checks signature headers before it reads a
   body (``server/auth.py`` ``precheck``) and caps bodies (``server/middleware.py``
   ``BodyLimit``); this shows whether that holds. Last, whether a stranger who
   names a registered device can spend that device's speed-test allowance.

2. **A genuine agent's heartbeats under a registration flood.** A genuine device
   (its own process, the SDK, signed as an agent signs) heartbeats ten times a
   second, far more often than an agent would, so that there are enough samples
   for a p99: on the quiet server first (the baseline), then while ``--devices``
   fresh keys register as fast as 32 connections allow (the flood of
   ``flood.py``, with the per-source limit **off**: the worst case, an attacker with
   as many addresses as devices), then after it: for the 2 minutes in which the
   challenges sent to fake devices in their first seconds expire unanswered
   (``proof_pickup_s``), and for a minute once they have, with the flood's devices
   registered and down. Printed: p50 and p99 of each, the flood's ratio to the
   baseline, the spread (the p99 of each 10 s slice, lowest to highest), the
   server's CPU, and what the proof histories of 50 fake devices say. Then the
   same flood against a server with the **default** per-source limit: how many
   registrations got in and how many were ``429 rate_limited``.

3. **Block documents with unverified devices.** The flood's server closes a
   block every ``--block-s`` seconds (``IDLEGRID_BLOCK_INTERVAL_S``). Before the
   flood it has only published devices: two genuine local agents that prove
   their compute, the heartbeating device and ``--staked`` idle devices, all
   staked or proven. Printed: the bytes of ``GET /v1/blocks/{n}/inputs`` and
   ``/outputs`` of two blocks before the flood (once every device that is up has
   its 5 block-hours of uptime, so that the documents have settled) and two after
   it (whose windows open once every flood device is registered and down), their
   ratio (goal: the same within 1 %: unverified devices are counted in
   ``unlisted``, not published), the ratio of the two quiet blocks (the spread)
   and each block's ``unlisted``.

The load generator, the genuine device, the agents and the server share this
machine's cores, so the latencies are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import finish, machine, print_table
from flood import (
    REQUEST_TIMEOUT_S,
    SIGN_CHUNK,
    agent_readiness,
    latency_summary,
    proof_history,
    scratch_postgres,
)
from heartbeats import (
    HOST,
    REGISTER_PATH,
    DeviceKeys,
    LoadResult,
    Server,
    cpu_hardware,
    drive,
    progress,
    redact,
    registration_requests,
    run_async,
    signed_headers,
)
from solders.keypair import Keypair

from idlegrid.core import rewards, signing
from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import FaucetRequest, RegisterRequest
from idlegrid.sdk import Client
from idlegrid.server.routes.proofs import SPEEDTEST_MAX_BYTES
from idlegrid.server.settings import ServerSettings
from idlegrid.worker.raynode import free_port

SPEEDTEST = "/v1/speedtest"
CLIENTS = 50
PIECE = b"\xa5" * (1 << 20)  # what every uploader sends, a MiB at a time
UPLOAD_DEADLINE_S = 180.0
RSS_EVERY_S = 0.01
MIB = 1 << 20
HEARTBEAT_EVERY_S = 0.1
SLICE_S = 10.0
STAKE = "200"  # IO: the minimum for the benchmark's CPU device
AGENTS = 2
MIN_UPTIME_S = 10
HEARTBEAT_INTERVAL_S = 2.0  # the local network's: a silent device is down after 5 s
GOAL_RATIO = 0.01
PICKUP_S = float(ServerSettings.model_fields["proof_pickup_s"].default)  # the server's default
SETTLED_S = 60.0
PROOF_SAMPLE = 50  # fake devices whose proof history is read after the flood


# -- a server process ----------------------------------------------------------------------


@contextlib.contextmanager
def network(
    work: Path, postgres: str | None, env: dict[str, str], agents: int = 0
) -> Iterator[tuple[LocalNetwork, Server]]:
    """A local network's server (and, later, its ``agents``) over SQLite or a scratch
    PostgreSQL database; stopped, and the database dropped, on the way out."""
    with contextlib.ExitStack() as stack:
        env = {"IDLEGRID_ENVIRONMENT": "development", **env}
        if postgres:
            env["IDLEGRID_DATABASE_URL"] = stack.enter_context(scratch_postgres(postgres))
        net = LocalNetwork(
            work,
            port=free_port(),
            workers=agents,
            min_uptime_s=MIN_UPTIME_S,
            heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
            env=env,
        )
        stack.callback(net.close)
        net.start_server(timeout_s=120)
        assert net.server is not None
        yield net, Server(net.server, net.port, work / "logs" / "server.log", 0.0)


def rss_bytes(pid: int) -> int:
    """The resident set of ``pid`` and its children."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return int(total)


class RssSampler:
    """The server's resident set every ``RSS_EVERY_S`` while in a ``with`` block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_bytes(self.pid))
            self._stop.wait(RSS_EVERY_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max(self.samples)


def mib(n: float) -> float:
    return round(n / MIB, 1)


def labelled_counter(server: Server, name: str, label: str) -> int:
    """A Prometheus counter's sample with the given label (``code="rate_limited"``)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    prefix = f"{name}{{{label}}} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix) :]))
    return 0


# -- 1. oversized uploads --------------------------------------------------------------


@dataclass
class Attack:
    name: str
    what: str
    path: str
    size: int  # bytes of body each client sends
    chunked: bool  # else Content-Length: size
    signature: str  # "none", "stranger" (a fresh key) or "registered" (a device's key)


def attacks() -> list[Attack]:
    over = SPEEDTEST_MAX_BYTES + 16 * MIB
    return [
        Attack("speedtest-unsigned", "no signature", SPEEDTEST, SPEEDTEST_MAX_BYTES, False, "none"),
        Attack("speedtest-over-limit", "over the limit", SPEEDTEST, over, False, "none"),
        Attack("speedtest-chunked", "chunked, no signature", SPEEDTEST, over, True, "none"),
        Attack(
            "speedtest-stranger", "a stranger's key", SPEEDTEST, SPEEDTEST_MAX_BYTES, False,
            "stranger",
        ),
        Attack(
            "speedtest-registered-key", "a device's key, bad signature", SPEEDTEST,
            SPEEDTEST_MAX_BYTES, False, "registered",
        ),
        Attack(
            "register-declared", "a stranger's key", REGISTER_PATH, SPEEDTEST_MAX_BYTES, False,
            "stranger",
        ),
        Attack(
            "register-chunked", "chunked, a stranger's key", REGISTER_PATH, SPEEDTEST_MAX_BYTES,
            True, "stranger",
        ),
    ]  # fmt: skip


@dataclass
class Upload:
    status: int = 0
    code: str = ""
    answered_s: float | None = None  # from the first byte sent to the answer's head
    sent_before_answer: int = 0
    sent: int = 0
    closed_s: float | None = None  # when the server closed the connection, if it did
    ended: str = ""  # "sent all", "cut off" (a write failed) or "timeout"


def attack_head(attack: Attack, network_id: str, host: str, claimed: str | None) -> bytes:
    """The request line and headers; a signature (when any) over an empty body, so it
    never verifies for the body that follows."""
    headers: dict[str, str] = {}
    if attack.signature != "none":
        signer = Keypair()
        key = claimed or str(signer.pubkey())
        headers = signed_headers(
            signer, key, "POST", attack.path, b"", str(int(time.time())), network_id
        )
        # The digest an upload declares: the empty body's, which the signature covers.
        headers[signing.HEADER_CONTENT_SHA256] = hashlib.sha256(b"").hexdigest()
    framing = "Transfer-Encoding: chunked" if attack.chunked else f"Content-Length: {attack.size}"
    lines = [
        f"POST {attack.path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/octet-stream",
        framing,
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


async def upload(port: int, head: bytes, size: int, chunked: bool) -> Upload:
    """Send ``head`` and ``size`` bytes of body, reading the answer meanwhile; the
    body keeps coming after an early answer, as an attacker's would."""
    out = Upload()
    reader, writer = await asyncio.open_connection(HOST, port)
    started = time.perf_counter()
    answered = asyncio.Event()

    async def read_answer() -> None:
        try:
            got = await reader.readuntil(b"\r\n\r\n")
            out.answered_s = time.perf_counter() - started
            out.sent_before_answer = out.sent
            out.status = int(got[9:12])
            lower = got.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
                with contextlib.suppress(ValueError, AttributeError):
                    out.code = str(json.loads(await reader.readexactly(length)).get("code", ""))
            answered.set()
            if not await reader.read(1):  # b"": the server closed the connection
                out.closed_s = time.perf_counter() - started
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            if out.closed_s is None:
                out.closed_s = time.perf_counter() - started
        finally:
            answered.set()

    reading = asyncio.create_task(read_answer())
    try:
        writer.write(head)
        view = memoryview(PIECE)
        remaining = size
        while remaining and out.closed_s is None:
            n = min(len(view), remaining)
            if chunked:
                writer.write(b"%x\r\n" % n)
                writer.write(view[:n])
                writer.write(b"\r\n")
            else:
                writer.write(view[:n])
            await writer.drain()
            out.sent += n
            remaining -= n
        if chunked and not remaining:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        out.ended = "sent all" if not remaining else "cut off"
    except OSError:
        out.ended = "cut off"
    try:
        await asyncio.wait_for(answered.wait(), 60)
    except TimeoutError:
        out.ended = "timeout"
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return out


async def attack_once(port: int, heads: Sequence[bytes], attack: Attack) -> list[Upload]:
    async def one(head: bytes) -> Upload:
        try:
            return await asyncio.wait_for(
                upload(port, head, attack.size, attack.chunked), UPLOAD_DEADLINE_S
            )
        except TimeoutError:
            return Upload(ended="timeout")

    return list(await asyncio.gather(*(one(h) for h in heads)))


def summarize_uploads(uploads: Sequence[Upload], size: int) -> dict[str, Any]:
    answered = sorted(u.answered_s for u in uploads if u.answered_s is not None)
    before = [u.sent_before_answer for u in uploads if u.answered_s is not None]
    closed = [u for u in uploads if u.closed_s is not None and u.sent < size]
    return {
        "answers": dict(Counter(f"{u.status} {u.code}".strip() for u in uploads)),
        "answered_p50_ms": round(1000 * statistics.median(answered), 1) if answered else None,
        "answered_max_ms": round(1000 * answered[-1], 1) if answered else None,
        "sent_before_answer_p50_mib": mib(statistics.median(before)) if before else None,
        "sent_before_answer_max_mib": mib(max(before)) if before else None,
        "sent_mean_mib": mib(statistics.mean(u.sent for u in uploads)),
        "ended": dict(Counter(u.ended for u in uploads)),
        "cut_off_by_server": len(closed),
    }


def register_devices(url: str, count: int, staked: bool = False) -> list[Keypair]:
    """``count`` devices registered (and each staked, if asked) through the SDK."""
    keys = [Keypair() for _ in range(count)]
    for i, kp in enumerate(keys):
        device = str(kp.pubkey())
        with Client(url, keypair=kp, timeout_s=REQUEST_TIMEOUT_S) as owner:
            owner.register_device(RegisterRequest(hardware=cpu_hardware(), name=f"real-{i}"))
            if staked:
                owner.faucet(device, FaucetRequest(asset="IO", amount=STAKE))
                owner.stake(device, STAKE)
    return keys


def speedtest_allowance(server: Server, network_id: str, victim: Keypair) -> dict[str, Any]:
    """A stranger names ``victim`` in more bad-signature uploads than its hourly
    allowance; then the victim, signing as itself, asks for its own speed test."""
    host = f"{HOST}:{server.port}"
    probe = Attack("allowance", "", SPEEDTEST, 1, False, "registered")
    answers: Counter[str] = Counter()
    for _ in range(12):
        head = attack_head(probe, network_id, host, str(victim.pubkey()))
        (done,) = run_async(attack_once(server.port, [head], probe))
        answers[f"{done.status} {done.code}"] += 1
    with Client(server.url, keypair=victim, timeout_s=REQUEST_TIMEOUT_S) as own:
        try:
            own.speedtest_upload(b"x")
            genuine = "200"
        except Exception as exc:  # the SDK raises the error the server named
            genuine = f"refused: {type(exc).__name__} {getattr(exc, 'code', '')}".strip()
    return {"stranger_answers": dict(answers), "then_the_device_itself": genuine}


def run_uploads(work: Path, postgres: str | None, clients: int) -> dict[str, Any]:
    progress(f"1. oversized uploads: {clients} clients at once per attack")
    with network(work, postgres, env={}) as (_, server):
        network_id = server.health()["network"]
        devices = register_devices(server.url, clients)  # one speed-test allowance each
        ids = [str(kp.pubkey()) for kp in devices]
        time.sleep(2)
        with RssSampler(server.proc.pid) as idle:
            time.sleep(3)
        idle_rss = int(statistics.median(idle.samples))
        progress(f"  idle resident set {mib(idle_rss)} MiB")
        rows = []
        host = f"{HOST}:{server.port}"
        for attack in attacks():
            claimed = ids if attack.signature == "registered" else [None] * clients
            heads = [attack_head(attack, network_id, host, claimed[i]) for i in range(clients)]
            progress(f"  {attack.name}: {clients} × {mib(attack.size)} MiB to {attack.path}")
            started = time.perf_counter()
            with RssSampler(server.proc.pid) as rss:
                uploads = run_async(attack_once(server.port, heads, attack))
            seconds = time.perf_counter() - started
            time.sleep(2)
            settled = rss_bytes(server.proc.pid)
            row = {
                "attack": attack.name,
                "what": attack.what,
                "path": attack.path,
                "body_mib": mib(attack.size),
                "chunked": attack.chunked,
                "seconds": round(seconds, 2),
                "peak_rss_mib": mib(rss.peak),
                "peak_over_idle": round(rss.peak / idle_rss, 2),
                "peak_extra_per_client_mib": mib((rss.peak - idle_rss) / clients),
                "rss_after_mib": mib(settled),
                **summarize_uploads(uploads, attack.size),
            }
            progress(
                f"    {row['answers']}; peak {row['peak_rss_mib']} MiB "
                f"({row['peak_over_idle']}x idle)"
            )
            rows.append(row)
        progress("  a stranger spends a registered device's speed-test allowance?")
        allowance = speedtest_allowance(server, network_id, devices[0])
        problems = server.log_problems()[:20]
    return {
        "clients": clients,
        "idle_rss_mib": mib(idle_rss),
        "attacks": rows,
        "allowance": allowance,
        "server_log_errors": problems,
    }


# -- 2. heartbeats under a flood, and 3. the blocks ----------------------------------------


def genuine_device(url: str, stop: Any, results: Any) -> None:
    """Register a device, stake it, then heartbeat it every ``HEARTBEAT_EVERY_S`` until
    ``stop``; put its id, then the samples ``("heartbeat", at, seconds, status)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it through ``stop``
    me = Keypair()
    device = str(me.pubkey())
    samples: list[tuple[str, float, float, int]] = []
    with Client(url, keypair=me, timeout_s=REQUEST_TIMEOUT_S) as owner:
        owner.register_device(RegisterRequest(hardware=cpu_hardware(), name="genuine"))
        owner.faucet(device, FaucetRequest(asset="IO", amount=STAKE))
        owner.stake(device, STAKE)
        results.put(device)
        while not stop.is_set():
            at = time.time()
            started = time.perf_counter()
            try:
                owner.heartbeat(device)
                status = 200
            except Exception:  # an error reply or a timeout: counted, not fatal
                status = 0
            samples.append(("heartbeat", at, time.perf_counter() - started, status))
            stop.wait(max(0.0, HEARTBEAT_EVERY_S - (time.time() - at)))
    results.put(samples)


def window(samples: Sequence[tuple[str, float, float, int]], start: float, end: float) -> Any:
    """p50/p99 of the samples taken in [start, end), and the p99 of each 10 s slice."""
    inside = [s for s in samples if start <= s[1] < end]
    out = latency_summary(inside)
    slices = []
    at = start
    while at + SLICE_S <= end:
        part = [s for s in inside if at <= s[1] < at + SLICE_S]
        if part:
            slices.append(latency_summary(part)["p99_ms"])
        at += SLICE_S
    if slices:
        out["slice_p99_ms"] = {"min": min(slices), "median": statistics.median(slices),
                               "max": max(slices), "slices": len(slices)}  # fmt: skip
    out["seconds"] = round(end - start, 1)
    return out


def block_sizes(api: Client, number: int) -> dict[str, Any]:
    summary = next(b for b in api.list_blocks(100).items if b.number == number)
    return {
        "number": number,
        "listed": summary.nominated + summary.excluded,
        "unlisted": summary.unlisted,
        "inputs_bytes": len(api.block_document(number, "inputs")),
        "outputs_bytes": len(api.block_document(number, "outputs")),
    }


def blocks_after(api: Client, after: float, count: int, timeout_s: float) -> list[int]:
    """The first ``count`` completed blocks whose windows open at ``after`` or later."""

    def done() -> list[int] | None:
        found = sorted(
            b.number
            for b in api.list_blocks(100).items
            if b.status == "completed" and b.starts_at >= after
        )
        return found[:count] if len(found) >= count else None

    return LocalNetwork.wait_for(done, timeout_s, f"{count} blocks to close", poll_s=1)


def run_flood(
    work: Path, postgres: str | None, fleet: DeviceKeys, staked: int, block_s: int
) -> dict[str, Any]:
    devices = len(fleet.ids)
    progress(
        f"2./3. a flood of {devices:,} registrations (per-source limit off), blocks every "
        f"{block_s}s"
    )
    env = {"IDLEGRID_REGISTRATION_RATE_PER_S": "0", "IDLEGRID_BLOCK_INTERVAL_S": str(block_s)}
    ctx = mp.get_context("spawn")
    stop, queue = ctx.Event(), ctx.Queue()
    out: dict[str, Any] = {"devices": devices, "staked_idle": staked, "block_s": block_s}
    with (
        network(work, postgres, env, agents=AGENTS) as (net, server),
        Client(server.url, timeout_s=REQUEST_TIMEOUT_S) as api,
    ):
        genuine = ctx.Process(target=genuine_device, args=(server.url, stop, queue))
        genuine.start()
        try:
            genuine_id = queue.get(timeout=120)
            register_devices(server.url, staked, staked=True)
            for index in range(AGENTS):
                net.start_worker(index)
            progress(f"  {AGENTS} genuine agents proving themselves; {staked} idle devices staked")
            agents = net.wait_for(
                lambda: [net.device_id(i) for i in range(AGENTS)], 120, "the agents' keys"
            )

            def ready() -> bool:
                seen = agent_readiness(server.url, agents).values()
                ok = [s["readiness"] in ("cluster_ready", "hired") for s in seen]
                return len(ok) == AGENTS and all(ok)

            net.wait_for(
                ready,
                600,
                "the genuine agents to become cluster_ready",
                poll_s=1,
            )
            quiet_start = time.time() + 5
            quiet_cpu = server.cpu_s()
            # Blocks settle once every device that is up has its 5 block-hours of uptime
            # (then the reasons for leaving one out stop changing): 6 blocks on.
            settle = rewards.NOMINATION_UPTIME_S // 3600 + 1
            steady = time.time() + settle * block_s
            progress(
                f"  the baseline: heartbeats, and two blocks once the published devices' "
                f"documents settle (about {(settle + 3) * block_s}s)"
            )
            before = blocks_after(api, steady, 2, (settle + 10) * block_s)
            quiet_end = time.time()
            cpu_s = {"quiet": server.cpu_s() - quiet_cpu}
            out["rss_before_flood_mib"] = mib(rss_bytes(server.proc.pid))
            network_id = server.health()["network"]
            host = f"{HOST}:{server.port}"

            def make_chunk(start: int, n: int) -> list[bytes]:
                return registration_requests(fleet, start, n, host, network_id, "fake")

            flood_start = time.time()
            result: LoadResult = run_async(
                drive(server, devices, make_chunk, 32, 201, "flood", chunk=SIGN_CHUNK)
            )
            flood_end = time.time()
            cpu_s["flood"], after_cpu = result.server_cpu_s, server.cpu_s()
            out["rss_after_flood_mib"] = mib(rss_bytes(server.proc.pid))
            progress("  after the flood: heartbeats and two blocks with every fake device down")
            after = blocks_after(api, flood_end + 2.5 * HEARTBEAT_INTERVAL_S, 2, 20 * block_s)
            # A fake device is up for its first seconds, and may be sent a challenge
            # then, which expires unanswered PICKUP_S later: the tail of the flood.
            tail_end = flood_end + PICKUP_S + 10
            time.sleep(max(0.0, tail_end - time.time()))
            cpu_s["tail"], settled_cpu = server.cpu_s() - after_cpu, server.cpu_s()
            progress(f"  and {SETTLED_S:.0f}s more, once the flood's challenges have expired")
            time.sleep(SETTLED_S)
            settled_end = time.time()
            cpu_s["settled"] = server.cpu_s() - settled_cpu
            sampled = fleet.ids[:: max(1, devices // PROOF_SAMPLE)][:PROOF_SAMPLE]
            out["fake_devices_proofs"] = dict(
                Counter(",".join(proof_history(server.url, d)) or "none" for d in sampled)
            )
            stop.set()
            samples = queue.get(timeout=60)
            genuine.join(30)
            out["registrations"] = result.summary()
            out["genuine_device"] = genuine_id
            out["heartbeats"] = {
                "quiet": window(samples, quiet_start, quiet_end),
                "flood": window(samples, flood_start, flood_end),
                "tail": window(samples, flood_end, tail_end),
                "settled": window(samples, tail_end, settled_end),
            }
            spans = {"quiet": quiet_end - quiet_start + 5, "flood": result.seconds,
                     "tail": tail_end - flood_end, "settled": settled_end - tail_end}  # fmt: skip
            for name, used in cpu_s.items():
                out["heartbeats"][name]["server_cpu_pct"] = round(100 * used / spans[name], 1)
            out["blocks_before"] = [block_sizes(api, n) for n in before]
            out["blocks_after"] = [block_sizes(api, n) for n in after]
            out["server_log_errors"] = server.log_problems()[:20]
        finally:
            stop.set()
            if genuine.is_alive():
                genuine.join(10)
                genuine.kill()
    return out


def run_rate_limited(work: Path, postgres: str | None, fleet: DeviceKeys) -> dict[str, Any]:
    devices = len(fleet.ids)
    progress(f"2b. the same {devices:,} registrations against the default per-source limit")
    with network(work, postgres, env={}) as (_, server):
        network_id = server.health()["network"]
        host = f"{HOST}:{server.port}"

        def make_chunk(start: int, n: int) -> list[bytes]:
            return registration_requests(fleet, start, n, host, network_id, "fake")

        result: LoadResult = run_async(
            drive(server, devices, make_chunk, 32, 201, "limited", chunk=SIGN_CHUNK)
        )
        limited = labelled_counter(server, "idlegrid_request_errors_total", 'code="rate_limited"')
        live = server.health()["devices_live"]
    return {
        "sent": result.sent,
        "registered": result.ok,
        "rate_limited": limited,
        "other_errors": result.errors - limited,
        "seconds": round(result.seconds, 1),
        "devices_live_after": live,
    }


# -- the report --------------------------------------------------------------------------


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    flood = results["flood"]
    hb = flood["heartbeats"]
    out: dict[str, Any] = {}
    if hb["quiet"].get("p99_ms") and hb["flood"].get("p99_ms"):
        out["heartbeat_p50"] = round(hb["flood"]["p50_ms"] / hb["quiet"]["p50_ms"], 2)
        out["heartbeat_p99"] = round(hb["flood"]["p99_ms"] / hb["quiet"]["p99_ms"], 2)
    before, after = flood["blocks_before"][-1], flood["blocks_after"]
    for doc in ("inputs", "outputs"):
        out[f"block_{doc}"] = [round(a[f"{doc}_bytes"] / before[f"{doc}_bytes"], 4) for a in after]
    base = flood["blocks_before"]
    for doc in ("inputs", "outputs"):
        out[f"block_{doc}_between_quiet_blocks"] = round(
            base[1][f"{doc}_bytes"] / base[0][f"{doc}_bytes"], 4
        )
    out["blocks_within_goal"] = all(
        abs(r - 1) <= GOAL_RATIO for doc in ("inputs", "outputs") for r in out[f"block_{doc}"]
    )
    return out


def print_report(results: dict[str, Any]) -> None:
    up = results["uploads"]
    print(
        f"\n1. {up['clients']} clients at once, each one body; server idle resident set "
        f"{up['idle_rss_mib']} MiB ({results['database']})"
    )
    rows = [
        [
            a["attack"],
            f"{a['body_mib']:.0f}{' chunked' if a['chunked'] else ''}",
            ", ".join(f"{n}× {k}" for k, n in a["answers"].items()),
            f"{a['answered_p50_ms']} / {a['answered_max_ms']}",
            f"{a['sent_before_answer_p50_mib']} / {a['sent_before_answer_max_mib']}",
            ", ".join(f"{n} {k}" for k, n in a["ended"].items()),
            f"{a['peak_rss_mib']}",
            f"{a['peak_over_idle']:.2f}x",
            f"{a['peak_extra_per_client_mib']}",
            f"{a['rss_after_mib']}",
        ]
        for a in up["attacks"]
    ]
    print_table(
        "oversized uploads",
        "lllrrlrrrr",
        ["attack", "MiB", "answers", "answer p50/max ms", "sent by then p50/max MiB", "body",
         "peak RSS MiB", "peak/idle", "extra/client MiB", "after MiB"],
        rows,
    )  # fmt: skip
    allowance = up["allowance"]
    print(
        f"a stranger naming a registered device, 12 bad signatures: "
        f"{allowance['stranger_answers']}; then the device itself: "
        f"{allowance['then_the_device_itself']}"
    )
    flood = results["flood"]
    reg = flood["registrations"]
    print(
        f"\n2. {reg['accepted']:,} of {flood['devices']:,} registrations in {reg['seconds']:.0f}s "
        f"= {reg['per_s']:,.0f}/s, per-source limit off ({reg['errors']} errors, server CPU "
        f"{reg['server_cpu_pct']}%); server resident set {flood['rss_before_flood_mib']} → "
        f"{flood['rss_after_flood_mib']} MiB"
    )
    hb = flood["heartbeats"]
    rows = []
    labels = (
        ("quiet", "quiet, before"),
        ("flood", "flood"),
        ("tail", "after: its challenges expire"),
        ("settled", "after: settled"),
    )
    for name, label in labels:
        w = hb[name]
        spread = w.get("slice_p99_ms")
        rows.append(
            [
                label,
                f"{w['seconds']:.0f}",
                f"{w.get('calls', 0):,}",
                f"{w.get('p50_ms', '-')}",
                f"{w.get('p99_ms', '-')}",
                f"{spread['min']}–{spread['max']} ({spread['slices']})" if spread else "-",
                f"{w.get('max_ms', '-')}",
                f"{w.get('errors', 0)}",
                f"{w['server_cpu_pct']:.0f}%",
            ]
        )
    print_table(
        "a genuine device's signed heartbeats, every 0.1 s (ms)",
        "lrrrrlrrr",
        ["window", "s", "calls", "p50", "p99", "p99 of 10 s slices", "max", "errors", "server CPU"],
        rows,
    )
    r = results["ratios"]
    if "heartbeat_p99" in r:
        print(f"flood / quiet: p50 {r['heartbeat_p50']}x, p99 {r['heartbeat_p99']}x")
    print(f"proofs of {PROOF_SAMPLE} fake devices, sampled: {flood['fake_devices_proofs']}")
    lim = results["rate_limited"]
    print(
        f"with the default per-source limit: {lim['registered']:,} of {lim['sent']:,} "
        f"registered, {lim['rate_limited']:,} got 429 rate_limited, {lim['other_errors']} "
        f"other errors, in {lim['seconds']:.0f}s"
    )
    rows = [
        [when, f"{b['number']}", f"{b['listed']}", f"{b['unlisted']:,}",
         f"{b['inputs_bytes']:,}", f"{b['outputs_bytes']:,}"]
        for when, blocks in (("before", flood["blocks_before"]), ("after", flood["blocks_after"]))
        for b in blocks
    ]  # fmt: skip
    print_table(
        f"\n3. block documents (a block every {flood['block_s']}s)",
        "lrrrrr",
        ["flood", "block", "listed", "unlisted", "inputs bytes", "outputs bytes"],
        rows,
    )
    print(
        f"after / before: inputs {r['block_inputs']}, outputs {r['block_outputs']} "
        f"(two quiet blocks: {r['block_inputs_between_quiet_blocks']}, "
        f"{r['block_outputs_between_quiet_blocks']}); within 1 %: "
        f"{'yes' if r['blocks_within_goal'] else 'NO'}"
    )
    for part in ("uploads", "flood"):
        for line in results[part]["server_log_errors"]:
            print(f"server log ({part}): {line}")
    print(f"\ntotal {results['total_s']}s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000, help="fake registrations")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="uploaders at once")
    parser.add_argument("--staked", type=int, default=20, help="idle staked devices")
    parser.add_argument("--block-s", type=int, default=30, help="IDLEGRID_BLOCK_INTERVAL_S")
    parser.add_argument(
        "--postgres", default=None, help="run on scratch databases beside this URL's"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine(),
        "database": f"postgresql beside {redact(args.postgres)}" if args.postgres else "sqlite",
        "settings": {"heartbeat_every_s": HEARTBEAT_EVERY_S, "slice_s": SLICE_S},
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        # busy or not: what else ran beside the benchmark shows in the load average
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        with tempfile.TemporaryDirectory(prefix="idlegrid-abuse-") as tmp:
            work = Path(tmp)
            results["uploads"] = run_uploads(work / "uploads", args.postgres, args.clients)
            fleet = DeviceKeys.generate(args.devices, "the flood")
            results["rate_limited"] = run_rate_limited(work / "limited", args.postgres, fleet)
            results["flood"] = run_flood(
                work / "flood", args.postgres, fleet, args.staked, args.block_s
            )
    except KeyboardInterrupt:
        progress("interrupted; every process has been stopped")
        return 130
    results["ratios"] = ratios(results)
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return finish(results, started, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
