"""Hostile jobs against sandboxed clusters: submitted with plain Ray job submission to
a rented cluster, each attack must fail or find nothing (``tests/hostile_job.py``), and
a job that exhausts its node's limits is contained while the agent carries on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient

from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import ClusterView
from idlegrid.sdk import Client
from idlegrid.worker.raynode import sandbox_prefix
from idlegrid.worker.sandbox import Cgroups, host_addresses
from tests.cloud_support import device_index, funded_buyer, rented

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
AGENT_SECRET = {"AWS_SECRET_ACCESS_KEY": "agent-only-secret-3f1c"}  # set by the cloud fixture


@pytest.fixture(scope="module")
def listeners() -> Iterator[list[tuple[str, int]]]:
    """TCP services on the host's loopback and its other addresses, answering anyone."""
    socks = []
    for host in ["127.0.0.1", *(a for a in host_addresses() if not a.startswith("198.18."))]:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        s.listen()
        socks.append(s)

        def serve(s: socket.socket = s) -> None:
            while True:
                try:
                    conn, _ = s.accept()
                except OSError:
                    return
                conn.sendall(b"host service\n")
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
    yield [s.getsockname()[:2] for s in socks]
    for s in socks:
        s.close()


def submit(view: ClusterView, script: str, env: dict[str, str], tmp: Path) -> tuple[str, str]:
    """Run ``script`` (from tests/) as a job; its final status and its logs."""
    assert view.dashboard_url and view.ray_token
    work = tmp / "job"
    work.mkdir(exist_ok=True)
    shutil.copy(HERE / script, work / script)
    jobs = JobSubmissionClient(
        view.dashboard_url, headers={"Authorization": f"Bearer {view.ray_token}"}
    )
    job_id = jobs.submit_job(
        entrypoint=f"python {script}", runtime_env={"working_dir": str(work), "env_vars": env}
    )
    deadline = time.monotonic() + 240
    while not jobs.get_job_status(job_id).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
    return jobs.get_job_status(job_id).value, jobs.get_job_logs(job_id)


def result(logs: str) -> dict[str, object]:
    line = next(x for x in logs.splitlines() if x.startswith("RESULT "))
    parsed: dict[str, object] = json.loads(line.removeprefix("RESULT "))
    return parsed


def test_hostile_jobs_find_nothing_of_the_host_the_agents_or_other_buyers(
    cloud: LocalNetwork, listeners: list[tuple[str, int]], tmp_path: Path
) -> None:
    assert cloud.sandboxed, "this host must sandbox (root, bwrap, pasta): .ci/run installs them"
    client, _ = funded_buyer(cloud)
    other, _ = funded_buyer(cloud)
    with (
        client,
        other,
        rented(other, 1, "victim") as victim,
        rented(client, 2, "attacker") as view,
    ):
        assert victim.ray_token and view.ray_token and victim.ray_address
        victim_host, _, victim_port = victim.ray_address.rpartition(":")
        data = cloud.data_dir
        site = Path(json.__file__).parent  # any file of the agents' Python: read-only inside
        targets = {
            "secret_files": [
                *(str(cloud.keypair_path(i)) for i in range(cloud.workers)),
                str(data / "idlegrid.db"),
                str(data / "keys" / "authority.json"),
                str(Path(sys.prefix) / "pyvenv.cfg"),  # readable: the check must see reads work
            ],
            "secret_dirs": [
                str(data),
                str(data / "keys"),
                str(Path.home()),
                os.getcwd(),
                "/var/run/wireguard",  # the agents' tunnels' control sockets (their keys)
            ],
            "protected_files": [
                str(Path(sys.prefix) / "hostile-pwned"),
                str(site / "hostile-pwned.py"),
            ],
            "services": [
                *listeners,
                ("127.0.0.1", cloud.port),  # the control plane
                # The other buyer's Ray head (on the overlay: another cluster's tunnel,
                # whose peers this cluster's WireGuard does not route to).
                (victim_host, int(victim_port)),
                ("169.254.169.254", 80),  # cloud metadata
                ("10.0.0.1", 80),
            ],
            "agent_only_env": {
                k: hashlib.sha256(v.encode()).hexdigest() for k, v in AGENT_SECRET.items()
            },
            "agent_pids": [p.pid for p in cloud.agents.values()]
            + [cloud.server.pid if cloud.server else 1],
        }
        status, logs = submit(view, "hostile_job.py", {"HOSTILE_TARGETS": json.dumps(targets)},
                              tmp_path)  # fmt: skip
        assert status == "SUCCEEDED", logs
        report = result(logs)
        host_namespaces = {os.readlink(f"/proc/{pid}/ns/pid") for pid in targets["agent_pids"]}
        probes = [report["driver"], *report["tasks"]]  # type: ignore[list-item]
        assert report["nodes"] == 2 and len({p["node"] for p in probes}) == 2
        for p in probes:
            assert p["uid"] == 65534
            reads = dict(p["reads"])
            # The Python environment is readable (it runs); nothing else of the host is.
            assert reads.pop(str(Path(sys.prefix) / "pyvenv.cfg")) == "READ"
            assert set(reads.values()) <= {"FileNotFoundError", "PermissionError"}, reads
            # The network's data, its keys and the tunnels' control sockets cannot even
            # be listed (home and the working directory may be: the reads above show
            # that nothing of the host's is in them).
            hidden = [str(data), str(data / "keys"), "/var/run/wireguard"]
            assert all(p["lists"][d] != "LISTED" for d in hidden), p["lists"]
            assert "WROTE" not in p["writes"].values(), p["writes"]
            assert "CONNECTED" not in p["connects"].values(), p["connects"]
            assert p["env_leak"] == [] and p["proc_env_leak"] is False
            # Of other users' processes it sees only the namespace's init (bwrap's reaper).
            assert [(o["pid"], o["cmdline"].split()[0]) for o in p["others"]] == [(1, "bwrap")]
            assert p["agents_visible"] == []
            # A PID namespace of its own: the agents' and the server's PIDs are not there
            # (a number reused by the sandbox's own processes reaches only those).
            assert p["pid_namespace"] not in host_namespaces, (p["pid_namespace"], host_namespaces)
            reached = [v for v in p["signals"].values() if v.startswith("REACHED")]
            assert not [v for v in reached if "idlegrid.cli.main" in v], p["signals"]
            assert victim.ray_token not in p["tokens"]
            assert view.ray_token in p["tokens"]  # its own cluster's, in its own environment
        # Nothing was written where the host keeps things.
        assert not (Path(sys.prefix) / "hostile-pwned").exists()
        assert not Path("/etc/idlegrid-pwned").exists()
        left = [path for p in probes for path in p["left"]]  # type: ignore[union-attr]
    with Client(cloud.server_url, keypair=client.keypair) as buyer:
        assert buyer.get_cluster(view.id).status == "terminated"
    # The agents carry on, and the rental left no file behind on the host.
    assert all(proc.poll() is None for proc in cloud.agents.values())
    deadline = time.monotonic() + 30
    names = {Path(path).name for path in left}
    while time.monotonic() < deadline:
        found = [
            str(f)
            for root in ("/tmp", "/var/tmp", "/root", "/home", "/dev/shm", str(cloud.data_dir))
            for f in _walk(Path(root))
            if f.name in names
        ]
        if not found:
            break
        time.sleep(1)
    assert found == []


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".venv")]
        for name in filenames:
            yield Path(dirpath) / name


def test_a_job_that_exhausts_its_limits_is_contained_and_the_agent_carries_on(
    cloud: LocalNetwork, tmp_path: Path
) -> None:
    client, _ = funded_buyer(cloud)
    with client, rented(client, 1, "limits") as view:
        device = view.nodes[0].device_id
        status, logs = submit(view, "limits_job.py", {}, tmp_path)
        assert status == "SUCCEEDED", logs
        fill = result(logs)["fill"]
        # The work directory is a capped tmpfs: full, not the provider's disk.
        assert fill["errno"] == "ENOSPC" and fill["mb"] < 4096, fill
        # A task that eats memory past the cap never gets it: the kernel kills inside
        # the node (the task, or the node itself, which the cluster then heals).
        assert outcome(view, "hog", tmp_path) in ("FAILED", "STOPPED", "node gone")
        index = device_index(cloud, device)
        log = cloud.data_dir / "logs" / f"worker-{index}.log"
        deadline = time.monotonic() + 30
        while "killed at the memory cap" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "killed at the memory cap" in log.read_text()  # the agent says why
        # A fork bomb meets the node's process cap (the kernel counts each refusal);
        # it may starve the node's own processes too, never the host's.
        (node_cgroups,) = Cgroups.with_prefix(sandbox_prefix(device))
        outcome(view, "forks", tmp_path)
        assert node_cgroups.pids_refused() > 0
    assert cloud.agents[index].poll() is None  # the agent carries on


def outcome(view: ClusterView, mode: str, tmp: Path) -> str:
    """Submit ``limits_job.py MODE``; its final status, or "node gone" when the kernel
    took the node's own processes (the Jobs API with them)."""
    assert view.dashboard_url and view.ray_token
    work = tmp / mode
    work.mkdir()
    shutil.copy(HERE / "limits_job.py", work / "limits_job.py")
    jobs = JobSubmissionClient(
        view.dashboard_url, headers={"Authorization": f"Bearer {view.ray_token}"}
    )
    job_id = jobs.submit_job(
        entrypoint=f"python limits_job.py {mode}", runtime_env={"working_dir": str(work)}
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            status = jobs.get_job_status(job_id)
        except Exception:  # the dashboard went with the node
            return "node gone"
        if status.is_terminal():
            return str(status.value)
        time.sleep(0.5)
    return "still running"
