"""The sandbox backends on their own (no Ray): what a process inside meets, what is
left after it stops or its agent is killed, and the cgroup files the limits write."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from idlegrid.errors import SandboxUnavailable
from idlegrid.worker.sandbox import Bubblewrap, Cgroups, Limits, NodeSpec, NoSandbox

PROBE = textwrap.dedent(
    """
    import json, os, socket
    def opens(path):
        try:
            open(path, "rb").close()
            return True
        except OSError:
            return False
    def connects(host, port):
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False
    open(os.path.expanduser("~/written"), "w").write("x")
    print(json.dumps({
        "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "home": os.environ.get("HOME"), "env": sorted(os.environ),
        "shadow": opens("/etc/shadow"), "root_home": opens("/root"),
        "resolver": opens("/etc/resolv.conf") and opens("/etc/nsswitch.conf"),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "cap_eff": [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0],
        "no_new_privs": [l.split()[1] for l in open("/proc/self/status")
                         if l.startswith("NoNewPrivs")][0],
        "loopback": connects("127.0.0.1", int(os.environ["HOST_PORT"])),
        "hostname": socket.gethostbyname(socket.gethostname()),
    }))
    """
)


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.split()}


@pytest.fixture(scope="module")
def bubblewrap() -> Bubblewrap:
    box = Bubblewrap()
    try:
        box.check()
    except SandboxUnavailable as exc:
        pytest.fail(f"this host must sandbox (.ci/sandbox-tools installs it): {exc.message}")
    return box


def spec(name: str, command: list[str], **env: str) -> NodeSpec:
    return NodeSpec(
        name=name,
        ip="198.18.0.250",
        ports=range(0),  # nothing forwarded: the host has no 198.18.0.250
        command=command,
        env=env,
        limits=Limits(cpus=1, memory_mb=512, tmp_mb=32),
    )


def test_a_process_inside_is_nobody_without_capabilities_or_the_host(
    bubblewrap: Bubblewrap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_ONLY_SECRET", "s3cret")
    with __import__("socket").socket() as host_service:
        host_service.bind(("127.0.0.1", 0))
        host_service.listen()
        port = host_service.getsockname()[1]
        box = bubblewrap.launch(
            spec("ig-test-probe", [sys.executable, "-c", PROBE], HOST_PORT=str(port))
        )
        out, _ = box.proc.communicate(timeout=60)
        box.stop()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["uid"] == seen["gid"] == 65534 and seen["groups"] == []
    assert seen["cap_eff"] == "0000000000000000" and seen["no_new_privs"] == "1"
    assert seen["home"] == "/tmp/home"
    assert "AGENT_ONLY_SECRET" not in seen["env"] and "HOST_PORT" in seen["env"]
    assert not seen["shadow"] and not seen["root_home"]
    assert seen["resolver"]  # what it needs of /etc it reads
    assert max(seen["pids"]) < 100  # a PID namespace of its own
    assert not seen["loopback"]
    assert seen["hostname"] == "198.18.0.250"  # its name is its own address, not loopback
    # Stopped: the namespace is gone, and what it wrote went with its tmpfs.
    assert "ig-test-probe" not in netns_names()
    assert not Path("/tmp/home/written").exists()


def test_a_killed_agent_takes_its_sandbox_with_it_and_its_successor_sweeps(
    bubblewrap: Bubblewrap, tmp_path: Path
) -> None:
    """The agent is kill -9ed with a node running: the node dies with it (bwrap's
    --die-with-parent), and the next agent removes the network namespace left."""
    bubblewrap.sweep("ig-killtest-")  # an earlier run's, killed mid-test
    pidfile = tmp_path / "inner.pid"
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from idlegrid.worker.sandbox import Bubblewrap, Limits, NodeSpec
                box = Bubblewrap().launch(NodeSpec(
                    name="ig-killtest-1", ip="198.18.0.251", ports=range(0),
                    command=["sh", "-c", "sleep 300"], env={{}}, limits=Limits(memory_mb=256)))
                open({str(pidfile)!r}, "w").write(str(box.proc.pid))
                time.sleep(300)
                """
            ),
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pidfile.exists()
    (left,) = Cgroups.with_prefix("ig-killtest-", bubblewrap.cgroup_root)
    procs = left.dirs["memory"] / "cgroup.procs"
    # Kill the agent once its node runs (the node's `sleep` is in the cgroup). Killed
    # while bwrap is still setting up, the agent can leave a sandbox behind: bwrap's
    # child sets its parent-death signal after its clone, too late if the parent has
    # gone; the next agent's sweep kills that one (the end of this test).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "sleep" not in _names(procs.read_text().split()):
        time.sleep(0.05)
    assert "sleep" in _names(procs.read_text().split())  # bwrap, and the node inside
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait()
    deadline = time.monotonic() + 30  # a loaded CI machine is slow to tear a namespace down
    while time.monotonic() < deadline and procs.read_text():
        time.sleep(0.1)
    still = procs.read_text().split()
    assert not still, f"outlived their agent: { {pid: _proc_state(pid) for pid in still} }"
    assert "ig-killtest-1" in netns_names()  # left behind …
    bubblewrap.sweep("ig-killtest-")  # … until the device's next agent starts
    assert "ig-killtest-1" not in netns_names()
    assert Cgroups.with_prefix("ig-killtest-", bubblewrap.cgroup_root) == []


def test_cgroup_v2_limits_are_written_to_the_kernels_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine has v1 controllers only: the v2 path is checked against the files
    the kernel's interface names, in a tree of plain files."""
    monkeypatch.setattr("idlegrid.worker.sandbox._own_cgroups", lambda: {"": "/"})
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    groups = Cgroups.create("ig-x", Limits(cpus=1.5, memory_mb=300, pids=77), tmp_path)
    node = tmp_path / "ig-x"
    assert groups.version == 2 and groups.dirs == {"": node}
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (tmp_path / "idlegrid-agent" / "cgroup.procs").read_text() == str(os.getpid())
    assert (node / "memory.max").read_text() == str(300 * 1024 * 1024)
    assert (node / "memory.swap.max").read_text() == "0"
    assert (node / "pids.max").read_text() == "77"
    assert (node / "cpu.max").read_text() == "150000 100000"
    (node / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
    assert groups.oom_kills() == 2


def test_no_sandbox_is_said_and_enforces_nothing() -> None:
    info = NoSandbox("--no-sandbox").info()
    assert info.backend == "none" and info.enforces == [] and info.reason == "--no-sandbox"


def _proc_state(pid: str) -> str:
    """``name status`` of a process (for a failure's message)."""
    try:
        proc = psutil.Process(int(pid))
        return f"{proc.name()} {proc.status()}"
    except psutil.Error:
        return "gone"


def _names(pids: list[str]) -> list[str]:
    names = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            names.append(psutil.Process(int(pid)).name())
    return names
