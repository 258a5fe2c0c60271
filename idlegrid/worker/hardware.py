"""Hardware detection for the worker agent.

Contract: :func:`detect_hardware` returns a valid :class:`~idlegrid.protocol.HardwareInfo` for
the machine it runs on and never raises for missing or broken probes. A probe that fails (no
NVIDIA driver, no ``sysctl``, an unreadable ``/proc/cpuinfo``) contributes nothing and is
logged at debug level; the catalog then decides whether what remains is supported. Detection
only reports: it makes no claim the server trusts without a proof of compute.

Sources, in order of use:

- NVIDIA GPUs through NVML (``pynvml``, imported lazily so a CPU box needs no driver).
- Apple silicon on macOS through ``sysctl`` and ``system_profiler``.
- CPU, RAM and disk through ``/proc/cpuinfo``, :mod:`platform` and :mod:`psutil`.

``kind`` is ``gpu`` when NVML found a GPU, else ``apple`` on macOS with an "Apple M" chip,
else ``cpu``. :func:`hardware_from_file` replaces detection with a JSON file, for simulated
devices in demos and tests (a claimed GPU on a CPU-only box).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from idlegrid.protocol import DeviceKind, GpuInfo, HardwareInfo

__all__ = [
    "Detector",
    "FileDetector",
    "LocalDetector",
    "cpu_model_from_cpuinfo",
    "detect_hardware",
    "hardware_from_file",
]

log = logging.getLogger(__name__)

Runner = Callable[[list[str]], str]

_MIB = 1024 * 1024
_GIB = 1024 * 1024 * 1024
_COMMAND_TIMEOUT_S = 10.0
_MAX_GPUS = 64  # HardwareInfo.gpus max_length

# Linux on Arm has no "model name" in /proc/cpuinfo; name the core from its implementer and
# part number (Arm's published MIDR values) so the catalog can match it.
_ARM_PARTS: dict[tuple[str, str], str] = {
    ("0x41", "0xd0c"): "ARM Neoverse-N1",
    ("0x41", "0xd49"): "ARM Neoverse-N2",
    ("0x41", "0xd40"): "ARM Neoverse-V1",
    ("0x41", "0xd4f"): "ARM Neoverse-V2",
}


class Detector(Protocol):
    """Anything that can say what hardware a device has."""

    def detect(self) -> HardwareInfo: ...


@dataclass
class LocalDetector:
    """Detects the machine this process runs on (see :func:`detect_hardware`)."""

    disk_path: str | None = None
    nvml: Any | None = None
    platform_name: str | None = None
    run: Runner | None = field(default=None, repr=False)

    def detect(self) -> HardwareInfo:
        return detect_hardware(
            nvml=self.nvml,
            platform_name=self.platform_name,
            run=self.run,
            disk_path=self.disk_path,
        )


@dataclass
class FileDetector:
    """Reports the hardware described in a JSON file instead of detecting it."""

    path: Path

    def detect(self) -> HardwareInfo:
        return hardware_from_file(self.path)


def hardware_from_file(path: str | Path) -> HardwareInfo:
    """Load a ``HardwareInfo`` JSON document; it replaces detection (simulated devices)."""
    return HardwareInfo.model_validate_json(Path(path).read_text(encoding="utf-8"))


def _run_command(argv: list[str]) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=True
    )
    return result.stdout.strip()


def _text(value: object) -> str:
    # pynvml returns bytes from older releases and str from newer ones.
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    return str(value).strip()


def _cuda_version(value: int) -> str:
    # NVML encodes CUDA 12.4 as 12040 (major * 1000 + minor * 10).
    return f"{value // 1000}.{(value % 1000) // 10}"


def _detect_nvidia(nvml: Any | None) -> tuple[list[GpuInfo], str | None, str | None]:
    """GPUs, driver version and CUDA version; nothing at all if NVML is unusable."""
    if nvml is None:
        try:
            import pynvml  # the NVML binding only loads libnvidia-ml when initialised
        except ImportError:
            log.debug("pynvml is not installed; no NVIDIA GPUs")
            return [], None, None
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError, OSError from ctypes, anything a fake raises
        log.debug("NVML unavailable: %s", exc)
        return [], None, None
    try:
        count = min(int(nvml.nvmlDeviceGetCount()), _MAX_GPUS)
        gpus = [_read_gpu(nvml, index) for index in range(count)]
        driver = _optional(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        cuda = _optional(lambda: _cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion())))
        return gpus, driver, cuda
    except Exception as exc:  # a half-read device list is worse than none
        log.debug("NVML query failed: %s", exc)
        return [], None, None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", exc)


def gpu_utilization(nvml: Any | None = None) -> float | None:
    """The busiest NVIDIA GPU's utilisation over NVML's last sample period, in percent;
    None without NVML or GPUs (heartbeats report it: idle-use abuse, ``core/idle.py``)."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return None
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception:
        return None
    try:
        count = min(int(nvml.nvmlDeviceGetCount()), _MAX_GPUS)
        if not count:
            return None
        return float(
            max(
                nvml.nvmlDeviceGetUtilizationRates(nvml.nvmlDeviceGetHandleByIndex(i)).gpu
                for i in range(count)
            )
        )
    except Exception as exc:
        log.debug("NVML utilisation query failed: %s", exc)
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", exc)


def _read_gpu(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle))[:128] or "unknown",
        vram_mb=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // _MIB,
        uuid=_optional(lambda: _text(nvml.nvmlDeviceGetUUID(handle))),
    )


def _optional(read: Callable[[], str]) -> str | None:
    # Identity fields are best-effort: vGPUs and old drivers refuse some queries, and a GPU
    # without a UUID is still a GPU.
    try:
        return read()[:64] or None
    except Exception as exc:
        log.debug("optional NVML query failed: %s", exc)
        return None


@dataclass
class _AppleFacts:
    brand: str | None = None
    ram_mb: int | None = None
    logical: int | None = None
    physical: int | None = None
    gpu_cores: int | None = None


def _sysctl(run: Runner, name: str) -> str | None:
    try:
        return run(["sysctl", "-n", name]).strip() or None
    except Exception as exc:  # missing binary, timeout, non-zero exit
        log.debug("sysctl %s failed: %s", name, exc)
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _apple_gpu_cores(run: Runner) -> int | None:
    try:
        data = json.loads(run(["system_profiler", "SPDisplaysDataType", "-json"]))
        for display in data.get("SPDisplaysDataType", []):
            cores = _int(str(display.get("sppci_cores", "")))
            if cores:
                return min(cores, 1024)  # HardwareInfo's bound; no Apple GPU is near it
    except Exception as exc:  # best-effort: the chip name alone classifies the device
        log.debug("system_profiler failed: %s", exc)
    return None


def _detect_apple(run: Runner) -> _AppleFacts:
    memsize = _int(_sysctl(run, "hw.memsize"))
    return _AppleFacts(
        brand=_sysctl(run, "machdep.cpu.brand_string"),
        ram_mb=memsize // _MIB if memsize is not None else None,
        logical=_int(_sysctl(run, "hw.ncpu")),
        physical=_int(_sysctl(run, "hw.physicalcpu")),
        gpu_cores=_apple_gpu_cores(run),
    )


def cpu_model_from_cpuinfo(text: str) -> str | None:
    """The CPU's name from ``/proc/cpuinfo`` text: "model name", else a known Arm core."""
    implementer = part = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and value:
            return value
        if key == "cpu implementer" and implementer is None:
            implementer = value.lower()
        elif key == "cpu part" and part is None:
            part = value.lower()
    if implementer is not None and part is not None:
        return _ARM_PARTS.get((implementer, part))
    return None


def _linux_cpu_model() -> str | None:
    try:
        return cpu_model_from_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8"))
    except OSError as exc:
        log.debug("cannot read /proc/cpuinfo: %s", exc)
        return None


def _clamp_cores(value: int | None) -> int | None:
    return min(value, 4096) if value else None


def detect_hardware(
    *,
    nvml: Any | None = None,
    platform_name: str | None = None,
    run: Runner | None = None,
    disk_path: str | Path | None = None,
) -> HardwareInfo:
    """Detect this machine's hardware.

    ``nvml`` replaces the ``pynvml`` module, ``platform_name`` replaces ``platform.system()``
    and ``run`` replaces the subprocess runner (it gets an argv and returns stdout), so tests
    can exercise every branch on any machine. ``disk_path`` is the filesystem whose size is
    reported (default: the home directory, where the agent keeps its data).
    """
    system = platform_name or platform.system()
    runner = run or _run_command
    gpus, driver, cuda = _detect_nvidia(nvml)

    apple = _detect_apple(runner) if system == "Darwin" else _AppleFacts()
    cpu_model = apple.brand
    if cpu_model is None and system == "Linux":
        cpu_model = _linux_cpu_model()
    cpu_model = " ".join((cpu_model or platform.processor() or "unknown").split())[:256]
    apple_chip = cpu_model[:64] if apple.brand and cpu_model.startswith("Apple M") else None

    logical = apple.logical or psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = apple.physical or psutil.cpu_count(logical=False)
    ram_mb = apple.ram_mb or psutil.virtual_memory().total // _MIB
    disk_total_gb = disk_free_gb = 0.0
    try:
        disk = psutil.disk_usage(str(disk_path or Path.home()))
        disk_total_gb, disk_free_gb = round(disk.total / _GIB, 2), round(disk.free / _GIB, 2)
    except OSError as exc:  # e.g. HOME points nowhere inside a container
        log.debug("disk usage unavailable: %s", exc)

    if gpus:
        kind = DeviceKind.GPU
    elif system == "Darwin" and apple_chip is not None:
        kind = DeviceKind.APPLE
    else:
        kind = DeviceKind.CPU

    os_version = platform.release()
    if system == "Darwin" and platform.mac_ver()[0]:
        os_version = platform.mac_ver()[0]  # "14.4" says more than the Darwin kernel's "23.4.0"

    return HardwareInfo(
        kind=kind,
        cpu_model=cpu_model,
        cpu_cores=_clamp_cores(logical) or 1,
        cpu_physical_cores=_clamp_cores(physical),
        ram_mb=ram_mb,
        gpus=gpus,
        gpu_driver=driver,
        cuda_version=cuda,
        apple_chip=apple_chip,
        apple_gpu_cores=apple.gpu_cores if apple_chip is not None else None,
        disk_total_gb=disk_total_gb,
        disk_free_gb=disk_free_gb,
        os=system[:64],
        os_version=os_version[:256],
        arch=platform.machine()[:32] or "unknown",
    )
