"""Where a buyer's code runs: the sandbox contract, and its backends.

A buyer's Ray node (and with it every driver, task and actor of the buyer) runs on
a stranger's machine, so the agent never runs it as itself. It hands the node's
command to a backend, which starts it in an isolated environment and removes
everything it wrote when it stops. The contract, on one page:

- ``check()``: can this backend run here? Raises ``SandboxUnavailable`` with the
  reason and the fix, so ``idlegrid worker start`` says so at once rather than a
  deploy failing later.
- ``info()``: what it enforces (``protocol.SandboxInfo``), registered with the device
  and shown in the explorer.
- ``launch(spec)``: start ``spec.command`` inside; returns a ``Launched`` handle with
  the process, ``stop()`` (kill everything inside, remove what it wrote) and
  ``oom_kills()`` (processes the kernel killed for exceeding the memory limit).

Backends:

``bubblewrap`` (Linux, the default). Needs root (it drops the buyer's work to an
unprivileged uid and writes cgroup limits), ``bwrap`` (Debian ``bubblewrap``),
``pasta`` (Debian ``passt``), ``nsenter``, ``setpriv`` and ``ip``. Per node:

- a network namespace joined to the outside by ``pasta``, a user-space TCP/IP stack:
  the node has its own address (the one it advertises to peers), the node's port
  block is forwarded to it from the host on that address (and is the namespace's
  ephemeral range past Ray's own ports, so whatever the buyer's code listens on is
  reachable by its peers), outbound TCP goes out
  through the host's sockets; the host's loopback is not mapped in
  (``--no-map-gw``), and prohibit routes close the private ranges, link-local
  (cloud metadata), CGNAT and every other address of the host;
- on the overlay (docs/networking.md), the node's WireGuard tunnel is moved into the
  namespace (``NodeSpec.attach``; its UDP socket stays with the agent) and pasta
  forwards no port: peers and the buyer reach the node through the tunnel only;
- ``bwrap``: its own PID, IPC, UTS and cgroup namespaces, a new session, dies with
  the agent; a root of its own with the system (``/usr``) and the Python
  environment read-only, a handful of ``/etc`` files, a minimal ``/dev`` with only
  the lent GPUs, its own ``/proc``; ``/tmp`` (also ``HOME`` and ``TMPDIR``) a
  size-capped tmpfs that vanishes with the node, so job files, ``~/ray_results``,
  logs and spilled objects never touch the provider's disk;
- ``setpriv``: uid/gid 65534, no supplementary groups, every capability dropped
  from all sets, ``no_new_privs``;
- cgroups (v1 here; v2 where the agent's cgroup can delegate): memory (tmpfs and the
  object store count), CPU quota and a process cap, from what the device lends. A
  node that exhausts them is killed inside; the agent carries on.
- the environment: an allowlist (``ENV_ALLOWLIST`` plus the node's own variables);
  nothing of the agent's.

``none`` (``--no-sandbox``, or where no backend can run): the node runs as the agent
does. The device registers that fact and is matched only to its own owner.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from idlegrid.errors import SandboxUnavailable
from idlegrid.protocol import SandboxInfo

SANDBOX_UID = 65534  # "nobody": owns nothing on the host
# Ranges a sandbox never reaches: RFC 1918, CGNAT, link-local (cloud metadata
# lives at 169.254.169.254), "this network" and multicast.
BLOCKED_NETWORKS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
)
# What of the agent's environment a node may see: locale and thread counts only.
ENV_ALLOWLIST = ("LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "MKL_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # fmt: skip
ETC_FILES = (
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "localtime",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "alternatives",
    "mime.types",
    "os-release",
)
# The node's hostname resolves to its own address (``/etc/hosts`` is the sandbox's):
# code that finds its address by name (gloo, for torch.distributed) gives peers the
# address they reach, not loopback.
HOSTNAME = "idlegrid-node"
NVIDIA_CONTROL = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


@dataclass(frozen=True, slots=True)
class Limits:
    """What the device lends a node, enforced by the kernel where the backend can."""

    cpus: float | None = None  # None: every core
    memory_mb: int | None = None  # None: no cap (the tmpfs then takes tmp_mb or 1 GiB)
    pids: int = 4096
    tmp_mb: int | None = None  # /tmp (HOME, Ray's sessions); None: half of memory_mb


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One Ray node to start: ``command`` runs with exactly ``env`` (plus the
    backend's own HOME, TMPDIR and PATH)."""

    name: str  # unique on this host; the agent's device id prefixes it
    ip: str  # the address the node advertises (and, sandboxed, owns)
    ports: range  # the node's port block, reachable from peers and the buyer
    command: list[str]
    env: dict[str, str]
    ephemeral: range | None = None  # the namespace's ports for bind(0), inside ``ports``
    peer_network: str | None = None  # a CIDR of the host's that stays open (local peers)
    gpus: tuple[int, ...] = ()
    limits: Limits = field(default_factory=Limits)
    # On the overlay: the node's overlay address (what it advertises, and its name
    # resolves to), and the hook that moves its WireGuard tunnel into the namespace.
    overlay_ip: str | None = None
    attach: Callable[[str | None], None] | None = None


class Launched(Protocol):
    proc: subprocess.Popen[bytes]

    def stop(self, grace_s: float = 10.0) -> None: ...

    def oom_kills(self) -> int: ...


class Sandbox(Protocol):
    backend: str

    def check(self) -> None: ...

    def info(self) -> SandboxInfo: ...

    def launch(self, spec: NodeSpec) -> Launched: ...

    def sweep(self, prefix: str) -> None: ...


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # PR_SET_PDEATHSIG fires when the *thread* that forked exits: launch nodes from a
    # long-lived thread (the agent's loop), never from a short-lived pool worker.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            # `ray start --block` stops its own daemons on SIGTERM; the group
            # kill below is for the ones that outlive the grace period.
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
    proc.wait()


# -- none ------------------------------------------------------------------------------------


@dataclass
class _Plain:
    proc: subprocess.Popen[bytes]

    def stop(self, grace_s: float = 10.0) -> None:
        _stop_group(self.proc, grace_s)

    def oom_kills(self) -> int:
        return 0


class NoSandbox:
    """The node runs as the agent, with the agent's environment: for a machine whose
    owner is the only renter (``--no-sandbox``)."""

    backend = "none"

    def __init__(self, reason: str = "--no-sandbox") -> None:
        self.reason = reason

    def check(self) -> None:
        return None

    def info(self) -> SandboxInfo:
        return SandboxInfo(backend="none", enforces=[], reason=self.reason)

    def launch(self, spec: NodeSpec) -> Launched:
        if spec.attach is not None:
            spec.attach(None)  # the tunnel in the agent's own namespace
        env = {**os.environ, **spec.env}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        proc = subprocess.Popen(
            spec.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        return _Plain(proc)

    def sweep(self, prefix: str) -> None:
        return None


# -- cgroups ---------------------------------------------------------------------------------


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per v1 controller ("" for v2), from /proc/self/cgroup."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


@dataclass
class Cgroups:
    """The cgroup directories of one node, v1 (a directory per controller) or v2 (one)."""

    dirs: dict[str, Path]  # controller ("memory", "cpu", "pids", or "" for v2) → dir
    version: int

    @staticmethod
    def _v2_base(root: Path) -> Path | None:
        controllers = root / "cgroup.controllers"
        if controllers.exists() and {"memory", "pids", "cpu"} <= set(
            controllers.read_text().split()
        ):
            return root / _own_cgroups().get("", "/").lstrip("/")
        return None

    @staticmethod
    def _v1_parent(root: Path, controller: str) -> Path:
        return root / controller / _own_cgroups().get(controller, "/").lstrip("/") / "idlegrid"

    @classmethod
    def with_prefix(cls, prefix: str, root: Path = Path("/sys/fs/cgroup")) -> list[Cgroups]:
        """The cgroups of nodes whose names start with ``prefix`` (one device's: what a
        killed agent left, or its running node's)."""
        base = cls._v2_base(root)
        if base is not None:
            return [cls({"": d}, 2) for d in base.glob(f"{prefix}*") if d.is_dir()]
        names = {d.name for d in cls._v1_parent(root, "memory").glob(f"{prefix}*") if d.is_dir()}
        return [
            cls({c: cls._v1_parent(root, c) / n for c in ("memory", "cpu", "pids")}, 1)
            for n in sorted(names)
        ]

    @classmethod
    def create(cls, name: str, limits: Limits, root: Path = Path("/sys/fs/cgroup")) -> Cgroups:
        """Make the node's cgroups and write its limits; raises OSError where the
        machine does not let this process (no root, no controllers)."""
        base = cls._v2_base(root)
        if base is not None:
            enable = base / "cgroup.subtree_control"
            if "memory" not in enable.read_text().split():
                # A cgroup with processes cannot delegate controllers: move this
                # agent into a leaf of its own first ("no internal processes").
                agent = base / "idlegrid-agent"
                agent.mkdir(exist_ok=True)
                (agent / "cgroup.procs").write_text(str(os.getpid()))
                enable.write_text("+memory +pids +cpu")
            d = base / name
            d.mkdir()
            groups = cls({"": d}, 2)
        else:
            dirs = {}
            for c in ("memory", "cpu", "pids"):
                parent = cls._v1_parent(root, c)
                if not parent.parent.is_dir():
                    raise OSError(f"no cgroup v1 {c} controller at {parent.parent}")
                dirs[c] = parent / name
                dirs[c].mkdir(parents=True)
            groups = cls(dirs, 1)
        try:
            groups._limit(limits)
        except OSError:
            groups.remove()
            raise
        return groups

    def _write(self, controller: str, file: str, value: str) -> None:
        (self.dirs[controller] / file).write_text(value)

    def _limit(self, limits: Limits) -> None:
        period = 100_000
        quota = str(int(limits.cpus * period)) if limits.cpus else None
        memory = str(limits.memory_mb * 1024 * 1024) if limits.memory_mb else None
        if self.version == 2:
            if memory:
                self._write("", "memory.max", memory)
                with contextlib.suppress(OSError):
                    self._write("", "memory.swap.max", "0")
            self._write("", "pids.max", str(limits.pids))
            if quota:
                self._write("", "cpu.max", f"{quota} {period}")
            return
        if memory:
            self._write("memory", "memory.limit_in_bytes", memory)
            with contextlib.suppress(OSError):  # no swap accounting: nothing to cap
                self._write("memory", "memory.memsw.limit_in_bytes", memory)
        self._write("pids", "pids.max", str(limits.pids))
        if quota:
            self._write("cpu", "cpu.cfs_period_us", str(period))
            self._write("cpu", "cpu.cfs_quota_us", quota)

    def join(self) -> None:  # pragma: no cover - runs in the child, before exec
        for d in self.dirs.values():
            (d / "cgroup.procs").write_text(str(os.getpid()))

    def _counter(self, controller: str, file: str, key: str) -> int:
        """One ``key value`` line of a cgroup's event file (0 when it is not there)."""
        d = self.dirs["" if self.version == 2 else controller]
        with contextlib.suppress(OSError, ValueError):
            for line in (d / file).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        return 0

    def oom_kills(self) -> int:
        """Processes the kernel killed at the memory cap."""
        events = "memory.events" if self.version == 2 else "memory.oom_control"
        return self._counter("memory", events, "oom_kill")

    def pids_refused(self) -> int:
        """How often the process cap refused a fork (``pids.events``: max)."""
        return self._counter("pids", "pids.events", "max")

    def remove(self, timeout_s: float = 10.0) -> None:
        """Kill whatever is left inside, then remove the directories."""
        deadline = time.monotonic() + timeout_s
        for d in self.dirs.values():
            while d.is_dir():
                with contextlib.suppress(OSError, ValueError):
                    for pid in (d / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)


# -- bubblewrap ------------------------------------------------------------------------------


def _run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise OSError(f"{args[0]} failed ({done.returncode}): {' / '.join(said)[-300:]}")


def host_addresses() -> list[str]:
    """Every IPv4 address of this host outside the loopback range."""
    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET" and not a.address.startswith("127."):
                out.append(a.address)
    return out


def _gateway(ip: str) -> str:
    """An address in the node's /24 other than its own: pasta's side of the link."""
    net = ipaddress.ip_network(f"{ip}/24", strict=False)
    first, last = net.network_address + 1, net.broadcast_address - 1
    return str(last if ipaddress.ip_address(ip) == first else first)


def _python_roots() -> list[str]:
    """The directories the node's Python needs: the environment and its base install."""
    roots = {sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parents[1])}
    return sorted(r for r in roots if r not in ("/usr", "/"))


@dataclass
class _Boxed:
    proc: subprocess.Popen[bytes]
    netns: str
    cgroups: Cgroups | None

    def stop(self, grace_s: float = 10.0) -> None:
        # SIGTERM to bwrap ends the sandbox: its init dies with it, and the kernel
        # kills every process of the PID namespace. Nothing inside needs a drain.
        _stop_group(self.proc, min(grace_s, 5.0))
        if self.cgroups is not None:
            self.cgroups.remove()
        # pasta quits when its namespace goes.
        with contextlib.suppress(OSError):
            _run("ip", "netns", "delete", self.netns)

    def oom_kills(self) -> int:
        return self.cgroups.oom_kills() if self.cgroups is not None else 0


class Bubblewrap:
    """Each node in bwrap + pasta + setpriv + cgroups (see the module docstring)."""

    backend = "bubblewrap"
    TOOLS = ("bwrap", "pasta", "nsenter", "setpriv", "ip", "sysctl")

    def __init__(self, cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
        self.cgroup_root = cgroup_root
        self._limits_ok: bool | None = None

    def check(self) -> None:
        if sys.platform != "linux":
            raise SandboxUnavailable("the bubblewrap sandbox needs Linux", platform=sys.platform)
        missing = [t for t in self.TOOLS if shutil.which(t) is None]
        if missing:
            raise SandboxUnavailable(
                "the sandbox's tools are missing: install Debian's bubblewrap and passt "
                "(apt-get install bubblewrap passt), or pass --no-sandbox to lend this "
                "machine only to its owner",
                missing=missing,
            )
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "the sandbox needs the agent to run as root: it starts buyers' work as an "
                "unprivileged user in namespaces of its own; run it as root, or pass "
                "--no-sandbox to lend this machine only to its owner",
                uid=os.geteuid(),
            )
        # A real start, end to end: a broken install fails here, not at a deploy.
        spec = NodeSpec(
            name=f"check-{uuid.uuid4().hex[:8]}",
            ip="198.18.255.1",
            ports=range(0),
            command=["true"],
            env={},
            limits=Limits(cpus=1, memory_mb=256, tmp_mb=16),
        )
        try:
            box = self.launch(spec, with_address=False)
        except OSError as exc:  # a tool that runs but fails: namespaces refused, say
            raise SandboxUnavailable(f"a test sandbox failed to start: {exc}") from None
        try:
            out, _ = box.proc.communicate(timeout=30)
        finally:
            box.stop()
        code = box.proc.returncode
        if code != 0:
            raise SandboxUnavailable(
                "a test sandbox failed to start: " + out.decode(errors="replace").strip()[-400:],
                exit_code=code,
            )

    def enforces(self) -> list[str]:
        base = ["user", "pid", "ipc", "uts", "filesystem", "environment", "devices", "network"]
        if self._limits_ok is None:
            try:
                Cgroups.create(f"probe-{uuid.uuid4().hex[:8]}", Limits(), self.cgroup_root).remove()
                self._limits_ok = True
            except OSError:
                self._limits_ok = False
        return [*base, "memory", "cpu", "pids"] if self._limits_ok else base

    def info(self) -> SandboxInfo:
        enforced = self.enforces()
        reason = None if "memory" in enforced else "no cgroup controllers: limits not enforced"
        return SandboxInfo(backend="bubblewrap", enforces=enforced, reason=reason)

    def sweep(self, prefix: str) -> None:
        """Remove what a killed agent left: its nodes' cgroups (killing whatever is
        still inside) and network namespaces (pasta goes with them)."""
        with contextlib.suppress(OSError):
            for groups in Cgroups.with_prefix(prefix, self.cgroup_root):
                groups.remove()
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            listed = subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True, timeout=10
            ).stdout
            for line in listed.splitlines():
                name = line.split()[0] if line.split() else ""
                if name.startswith(prefix):
                    _run("ip", "netns", "delete", name)

    def _bwrap_args(self, spec: NodeSpec, tmp_mb: int, hosts_fd: int) -> list[str]:
        args = [
            "bwrap",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            HOSTNAME,
            "--die-with-parent",
            "--new-session",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for top in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
            path = Path("/") / top
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        for name in ETC_FILES:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--perms", "0644", "--ro-bind-data", str(hosts_fd), "/etc/hosts"]
        ancestors: set[Path] = {Path("/etc")}
        for root in _python_roots():
            args += ["--ro-bind", root, root]
            ancestors.update(p for p in Path(root).parents if p != Path("/"))
        for path in sorted(ancestors):  # bwrap makes the directories above a bind 0700
            args += ["--chmod", "0755", str(path)]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--tmpfs", "/dev/shm", "--chmod", "1777", "/dev/shm"]  # Ray's object store
        for i in spec.gpus:
            args += ["--dev-bind-try", f"/dev/nvidia{i}", f"/dev/nvidia{i}"]
        if spec.gpus:
            for name in NVIDIA_CONTROL:
                args += ["--dev-bind-try", f"/dev/{name}", f"/dev/{name}"]
        args += [
            "--size",
            str(tmp_mb * 1024 * 1024),
            "--tmpfs",
            "/tmp",
            "--dir",
            "/tmp/home",
            "--dir",
            "/var",
            "--symlink",
            "/tmp",
            "/var/tmp",
            "--chmod",
            "1777",
            "/tmp",
            "--chmod",
            "0777",
            "/tmp/home",
            "--chdir",
            "/tmp/home",
        ]
        return args

    def launch(self, spec: NodeSpec, *, with_address: bool = True) -> Launched:
        netns = spec.name
        _run("ip", "netns", "add", netns)
        cgroups: Cgroups | None = None
        try:
            self._network(netns, spec, with_address and spec.overlay_ip is None)
            if spec.attach is not None:
                spec.attach(netns)  # the tunnel: peers reach the node through it only
            limits = spec.limits
            with contextlib.suppress(OSError):
                cgroups = Cgroups.create(netns, limits, self.cgroup_root)
            tmp_mb = limits.tmp_mb or max(64, (limits.memory_mb or 2048) // 2)
            hosts_fd, hosts_w = os.pipe()
            own = spec.overlay_ip or spec.ip
            os.write(hosts_w, f"127.0.0.1\tlocalhost\n{own}\t{HOSTNAME}\n".encode())
            os.close(hosts_w)
            command = [
                "nsenter",
                f"--net=/run/netns/{netns}",
                "--",
                *self._bwrap_args(spec, tmp_mb, hosts_fd),
                "--",
                "setpriv",
                f"--reuid={SANDBOX_UID}",
                f"--regid={SANDBOX_UID}",
                "--clear-groups",
                "--inh-caps=-all",
                "--ambient-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
                *spec.command,
            ]
            python_bin = str(Path(sys.executable).parent)
            env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
            env.update(spec.env)
            env.update(HOME="/tmp/home", TMPDIR="/tmp", PATH=f"{python_bin}:/usr/bin:/bin")
            groups = cgroups

            def prepare() -> None:  # pragma: no cover - runs in the child
                _die_with_parent()
                if groups is not None:
                    groups.join()

            try:
                proc = subprocess.Popen(
                    command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                    preexec_fn=prepare,
                    pass_fds=(hosts_fd,),
                )
            finally:
                os.close(hosts_fd)
        except BaseException:
            if cgroups is not None:
                cgroups.remove()
            with contextlib.suppress(OSError):
                _run("ip", "netns", "delete", netns)
            raise
        return _Boxed(proc, netns, cgroups)

    @staticmethod
    def _network(netns: str, spec: NodeSpec, with_address: bool) -> None:
        """pasta on the namespace, then the routes that close the host and its LAN."""
        pasta = ["pasta", "-q", "--runas", "0", "--config-net", "--no-map-gw", "-4"]
        pasta += ["-a", spec.ip, "-n", "24", "-g", _gateway(spec.ip)]
        if with_address and len(spec.ports):
            pasta += ["-t", f"{spec.ip}/{spec.ports.start}-{spec.ports.stop - 1}"]
        else:
            pasta += ["-t", "none"]
        pasta += ["-u", "none", "-T", "none", "-U", "none", "--netns", f"/run/netns/{netns}"]
        _run(*pasta)  # returns once the namespace is configured; runs on in the background
        if spec.ephemeral:
            low, high = spec.ephemeral.start, spec.ephemeral.stop - 1
            _run("nsenter", f"--net=/run/netns/{netns}", "--",
                 "sysctl", "-qw", f"net.ipv4.ip_local_port_range={low} {high}")  # fmt: skip
        for cidr in _blocked(spec.ip, spec.peer_network):
            _run("ip", "-n", netns, "route", "add", "prohibit", cidr)


def _blocked(own_ip: str, peer_network: str | None) -> Iterator[str]:
    """Prohibit routes: the closed ranges, and every address of the host but the
    node's own and its peers' (several local "machines" on one host)."""
    yield from BLOCKED_NETWORKS
    peers = ipaddress.ip_network(peer_network) if peer_network else None
    for address in host_addresses():
        ip = ipaddress.ip_address(address)
        if peers is not None and ip in peers:
            continue
        if address != own_ip and not any(ip in ipaddress.ip_network(n) for n in BLOCKED_NETWORKS):
            yield f"{address}/32"


def default_sandbox() -> Sandbox:
    """The backend an agent uses unless told ``--no-sandbox``."""
    return Bubblewrap()
