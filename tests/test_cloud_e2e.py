"""IO Cloud end to end: real agents start real Ray nodes with token auth; a buyer
deploys, runs jobs, loses a device mid-job and terminates, and the bill holds."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ray.job_submission import JobSubmissionClient

from idlegrid.core import clusters as bill
from idlegrid.core.fees import fee, units
from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import ClusterView
from idlegrid.sdk import Client
from idlegrid.worker.raynode import sandbox_prefix
from tests.cloud_support import deploy_running, device_index, funded_buyer, joined, on_overlay
from tests.conftest import write_keypair

pytestmark = pytest.mark.e2e

WHERE = """
import json, time, ray
ray.init()
devices = {n["NodeID"]: [k[7:] for k in n["Resources"] if k.startswith("device:")][0]
           for n in ray.nodes() if n["Alive"]}

@ray.remote(num_cpus=1, max_retries=5)
def work(i):
    time.sleep(%(sleep)s)
    return ray.get_runtime_context().get_node_id()

ran = ray.get([work.remote(i) for i in range(%(tasks)d)])
print("RESULT " + json.dumps({"devices": sorted({devices.get(n, n) for n in ran})}))
"""


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idlegrid.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def amount(text: str) -> int:
    return units(text, "IO")


def job_script(tmp_path: Path, tasks: int, sleep: float) -> Path:
    (tmp_path / "job.py").write_text(WHERE % {"tasks": tasks, "sleep": sleep})
    return tmp_path


def result_line(logs: str) -> dict[str, list[str]]:
    line = next(x for x in logs.splitlines() if x.startswith("RESULT "))
    parsed: dict[str, list[str]] = json.loads(line.removeprefix("RESULT "))
    return parsed


def check_bill(client: Client, buyer: str, view: ClusterView, start_balance: int) -> None:
    """Buyer pays charged + fee(charged); providers get each slice less its fee."""
    charged = amount(view.charged)
    assert sum(amount(n.paid) for n in view.nodes) == charged
    balance = amount(client.wallet(buyer).balances[0].balance)
    assert balance == start_balance - charged - fee(charged, "IO")
    assert amount(view.paid) - amount(view.refunded) == charged + fee(charged, "IO")
    audit = client.ledger_audit()
    assert audit.ok, [c for c in audit.checks if not c.ok]


@pytest.fixture
def account(cloud: LocalNetwork) -> Iterator[tuple[Client, str]]:
    client, buyer = funded_buyer(cloud)
    with client:
        yield client, buyer


@pytest.fixture
def joins() -> Iterator[contextlib.ExitStack]:
    """Overlays this test joined as the buyer (``cloud_support.joined``), left after it."""
    with contextlib.ExitStack() as stack:
        yield stack


def test_deploy_run_a_job_on_the_hired_devices_and_terminate(
    cloud: LocalNetwork, account: tuple[Client, str], tmp_path: Path, joins: contextlib.ExitStack
) -> None:
    client, buyer = account
    start_balance = amount(client.wallet(buyer).balances[0].balance)
    assert client.keypair is not None
    key = write_keypair(tmp_path / "buyer.json", client.keypair)
    out = cli(
        "clusters", "deploy", "--hardware", "cpu", "--quantity", "2", "--name", "e2e",
        "--keypair", str(key), "--server", cloud.server_url, "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    view = joins.enter_context(joined(client, ClusterView.model_validate_json(out.stdout)))
    assert view.status == "running" and view.dashboard_url and view.ray_token
    assert on_overlay(view) is cloud.overlay_on  # Ray bound where the network said
    hired = sorted(n.device_id for n in view.nodes)

    # A client without the cluster's token is refused by Ray itself.
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        r = httpx.get(f"{view.dashboard_url}/api/jobs/", headers=headers, timeout=10)
        assert r.status_code in (401, 403), r.text

    job = cli(
        "jobs", "submit", view.id, "--working-dir", str(job_script(tmp_path, 8, 0.5)),
        "--keypair", str(key), "--server", cloud.server_url, "--json", "--", "python", "job.py",
    )  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    ran = json.loads(job.stdout)
    assert ran["status"] == "SUCCEEDED"
    assert result_line(ran["logs"])["devices"] == hired  # the work ran on the hired devices

    out = cli("clusters", "terminate", view.id, "--keypair", str(key), "--server",
              cloud.server_url, "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    done = ClusterView.model_validate_json(out.stdout)
    assert done.status == "terminated" and done.ray_token is None
    check_bill(client, buyer, done, start_balance)
    # The agents stop their nodes: the dashboard goes away. (On the overlay, the
    # buyer's peer leaves with the cluster, and the overlay address then routes
    # wherever this host's default route goes: the head's sandbox is what must go.)
    head = next(n.device_id for n in view.nodes if n.role == "head")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if on_overlay(view):
            names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
            if sandbox_prefix(head) not in names.stdout:
                break
        else:
            try:
                httpx.get(f"{view.dashboard_url}/api/version", timeout=1)
            except httpx.HTTPError:
                break
        time.sleep(0.5)
    else:
        pytest.fail("the head's Ray node kept running after termination")


def test_killing_a_hired_agent_mid_job(
    cloud: LocalNetwork, account: tuple[Client, str], tmp_path: Path, joins: contextlib.ExitStack
) -> None:
    client, buyer = account
    start_balance = amount(client.wallet(buyer).balances[0].balance)
    view = joins.enter_context(joined(client, deploy_running(client, 2, name="heal")))
    assert view.ray_token and view.dashboard_url
    jobs = JobSubmissionClient(
        view.dashboard_url, headers={"Authorization": f"Bearer {view.ray_token}"}
    )
    job_id = jobs.submit_job(
        entrypoint="python job.py",
        runtime_env={"working_dir": str(job_script(tmp_path, 24, 1.0))},
    )
    while jobs.get_job_status(job_id).value == "PENDING":
        time.sleep(0.2)
    time.sleep(2.0)  # tasks are running on both nodes
    worker = next(n.device_id for n in view.nodes if n.role == "worker")
    index = device_index(cloud, worker)
    killed_at = time.time()
    cloud.kill_worker(index, signal.SIGKILL)  # the machine dies: agent and Ray node

    deadline = time.monotonic() + 120
    while not jobs.get_job_status(job_id).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs.get_job_status(job_id).value == "SUCCEEDED", jobs.get_job_logs(job_id)

    # The server noticed, closed the dead node at its last heartbeat, and hired
    # the spare device, which joined the same Ray cluster.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        healed = client.get_cluster(view.id)
        live = [n for n in healed.nodes if n.left_at is None]
        if len(live) == 2 and all(n.state == "up" for n in live) and healed.status == "running":
            break
        time.sleep(0.5)
    dead = next(n for n in healed.nodes if n.device_id == worker)
    assert dead.left_reason == "device down"
    assert dead.left_at is not None and dead.left_at <= killed_at + 0.1
    live = [n for n in healed.nodes if n.left_at is None]
    assert len(live) == 2 and worker not in {n.device_id for n in live}
    assert all(n.state == "up" for n in live) and healed.status == "running"
    assert healed.ray_address == view.ray_address  # the same Ray cluster

    done = client.terminate_cluster(view.id)
    price = amount(done.price_per_device_hour)
    dead = next(n for n in done.nodes if n.device_id == worker)
    assert dead.joined_at is not None and dead.left_at is not None
    expected = bill.gross(price, round(dead.joined_at * 1000), round(dead.left_at * 1000))
    assert amount(dead.paid) == expected  # not paid for a moment after its last heartbeat
    check_bill(client, buyer, done, start_balance)
    cloud.start_worker(index)  # the provider reboots the machine
