"""An attacker's Ray job: submitted with plain ``ray job submit`` to a rented cluster,
it tries to reach what a buyer must never reach, from the driver (on the head) and
from a task on every node, and prints what it found as one ``RESULT`` line.

Targets come in the job's environment (``HOSTILE_TARGETS``, JSON) from the test (the
agent's secrets as hashes: the job's own environment must not hold them); the job
reports plain facts (what opened, what connected), and the test judges them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import uuid

import ray

TARGETS = json.loads(os.environ["HOSTILE_TARGETS"])
TOKEN_RE = re.compile(rb"[0-9a-f]{64}")


def try_read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.read(64)
    except OSError as exc:
        return type(exc).__name__
    return "READ"


def try_list(path: str) -> str:
    try:
        os.listdir(path)
    except OSError as exc:
        return type(exc).__name__
    return "LISTED"


def try_write(path: str) -> str:
    try:
        with open(path, "w") as f:
            f.write("pwned")
    except OSError as exc:
        return type(exc).__name__
    return "WROTE"


def try_connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=2):
            return "CONNECTED"
    except OSError as exc:
        return type(exc).__name__


def processes() -> list[dict[str, object]]:
    """Every process this code can see, with its uid and whether it looks like ours."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, StopIteration):
            continue
        out.append({"pid": int(pid), "uid": int(uid), "cmdline": cmdline[:200]})
    return out


def tokens_in_proc() -> set[str]:
    """Every 64-hex string in any readable environment or command line."""
    found: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    found.update(m.decode() for m in TOKEN_RE.findall(f.read()))
            except OSError:
                pass
    return found


def tokens_in_files(roots: list[str], limit: int = 20_000) -> set[str]:
    """64-hex strings in the readable files under ``roots`` (a bounded walk)."""
    found: set[str] = set()
    seen = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in ("proc", "sys", "dev")]
            for name in filenames:
                seen += 1
                if seen > limit:
                    return found
                try:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        found.update(m.decode() for m in TOKEN_RE.findall(f.read(1 << 20)))
                except OSError:
                    pass
    return found


def probe() -> dict[str, object]:
    t = TARGETS
    marker = f"hostile-{uuid.uuid4().hex}"
    home = os.path.expanduser("~")
    os.makedirs(os.path.join(home, "ray_results"), exist_ok=True)
    left = [os.path.join(home, "ray_results", marker), f"/tmp/{marker}", f"/var/tmp/{marker}"]
    for path in left:
        with open(path, "w") as f:
            f.write("left behind")
    # The agents' PID numbers, signalled from inside. In a PID namespace of its own a
    # number may be taken by one of the sandbox's own processes or threads (Ray has
    # hundreds): say what the signal reached, so that only an agent counts.
    kills = {}
    for pid in t["agent_pids"]:
        try:
            os.kill(pid, 0)
        except OSError as exc:
            kills[pid] = type(exc).__name__
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                kills[pid] = "REACHED " + f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError as exc:
            kills[pid] = f"REACHED unreadable ({type(exc).__name__})"
    visible = processes()
    environ = ""
    for p in visible:
        try:
            with open(f"/proc/{p['pid']}/environ", "rb") as f:
                environ += f.read().decode(errors="replace") + "\0"
        except OSError:
            pass
    return {
        "node": ray.get_runtime_context().get_node_id(),
        "uid": os.getuid(),
        "reads": {p: try_read(p) for p in [*t["secret_files"], "/etc/shadow"]},
        "lists": {p: try_list(p) for p in t["secret_dirs"]},
        "writes": {p: try_write(p) for p in [*t["protected_files"], "/etc/idlegrid-pwned"]},
        "connects": {f"{h}:{p}": try_connect(h, p) for h, p in t["services"]},
        "env_leak": [k for k in t["agent_only_env"] if k in os.environ],
        "proc_env_leak": any(
            hashlib.sha256(value.encode()).hexdigest() == t["agent_only_env"].get(key)
            for key, _, value in (pair.partition("=") for pair in environ.split("\0"))
        ),
        "others": [p for p in visible if p["uid"] != os.getuid()],
        "agents_visible": [p for p in visible if "idlegrid.cli.main" in str(p["cmdline"])],
        "signals": kills,
        "pid_namespace": os.readlink("/proc/self/ns/pid"),
        "tokens": sorted(tokens_in_proc() | tokens_in_files(["/"])),
        "left": left,
        "home": home,
    }


@ray.remote(num_cpus=0)
def probe_task() -> dict[str, object]:
    return probe()


def main() -> None:
    ray.init()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    devices = [k for n in nodes for k in n["Resources"] if k.startswith("device:")]
    tasks = [probe_task.options(resources={d: 0.001}).remote() for d in devices]
    report = {"driver": probe(), "tasks": ray.get(tasks), "nodes": len(nodes)}
    print("RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
