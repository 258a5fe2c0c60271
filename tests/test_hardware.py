"""Worker hardware detection.

Real detection runs on this machine. NVML is the one thing faked (the test machines have no
NVIDIA GPU); the Apple probes run through an injected command runner so their parsing is
exercised on Linux.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from types import SimpleNamespace

import pytest

from idlegrid.catalog import load_catalog
from idlegrid.protocol import DeviceKind, GpuInfo, HardwareInfo
from idlegrid.worker.hardware import (
    FileDetector,
    LocalDetector,
    cpu_model_from_cpuinfo,
    detect_hardware,
    gpu_utilization,
    hardware_from_file,
)

H100_BYTES = 85_520_809_984  # what NVML reports for an 80 GB H100 (81559 MiB)


class FakeNvml:
    """The slice of pynvml that detection uses, with two H100s."""

    def __init__(self, names: list[str | bytes] | None = None) -> None:
        self.names = names or [b"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"]
        self.initialised = False
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        assert self.initialised
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return self.names[handle]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=H100_BYTES, free=H100_BYTES, used=0)

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-0000000{handle}-aaaa-bbbb-cccc-dddddddddddd"

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=[7, 63][handle], memory=0)


class BrokenNvml(FakeNvml):
    def nvmlInit(self) -> None:
        raise RuntimeError("NVML Shared Library Not Found")


class FailingQueryNvml(FakeNvml):
    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        raise RuntimeError("GPU is lost")


def apple_runner(argv: list[str]) -> str:
    """Answers like an M3 Max MacBook Pro (14 cores, 36 GB)."""
    answers = {
        "machdep.cpu.brand_string": "Apple M3 Max",
        "hw.memsize": str(36 * 1024**3),
        "hw.ncpu": "14",
        "hw.physicalcpu": "14",
    }
    if argv[:2] == ["sysctl", "-n"]:
        return answers[argv[2]] + "\n"
    if argv[0] == "system_profiler":
        display = {"_name": "Apple M3 Max", "sppci_cores": "30", "sppci_model": "Apple M3 Max"}
        return json.dumps({"SPDisplaysDataType": [display]})
    raise FileNotFoundError(argv[0])


def test_real_detection_on_this_machine(tmp_path: Path) -> None:
    hw = detect_hardware(disk_path=tmp_path)
    assert hw.cpu_cores >= 1
    assert hw.cpu_physical_cores is None or 1 <= hw.cpu_physical_cores <= hw.cpu_cores
    assert hw.ram_mb > 0
    assert hw.disk_total_gb > 0 and 0 <= hw.disk_free_gb <= hw.disk_total_gb
    assert hw.cpu_model and hw.cpu_model != "unknown"
    assert hw.os == platform.system() and hw.arch
    if not hw.gpus and hw.os == "Linux":
        assert hw.kind is DeviceKind.CPU
        assert load_catalog().classify(hw).processors == 1


def test_detection_without_nvml_is_cpu(tmp_path: Path) -> None:
    hw = LocalDetector(disk_path=str(tmp_path), nvml=BrokenNvml(), platform_name="Linux").detect()
    assert hw.kind is DeviceKind.CPU
    assert hw.gpus == [] and hw.gpu_driver is None and hw.cuda_version is None


def test_fake_nvml_yields_two_h100s(tmp_path: Path) -> None:
    nvml = FakeNvml()
    hw = detect_hardware(nvml=nvml, platform_name="Linux", disk_path=tmp_path)
    assert hw.kind is DeviceKind.GPU
    assert [g.name for g in hw.gpus] == ["NVIDIA H100 80GB HBM3"] * 2
    assert [g.index for g in hw.gpus] == [0, 1]
    assert all(g.vram_mb == 81559 for g in hw.gpus)
    assert hw.gpus[1].uuid == "GPU-00000001-aaaa-bbbb-cccc-dddddddddddd"
    assert (hw.gpu_driver, hw.cuda_version) == ("550.54.15", "12.4")
    assert nvml.shutdowns == 1
    c = load_catalog().classify(hw)
    assert (c.model, c.processors) == ("h100-sxm-80gb", 2)


@pytest.mark.parametrize("nvml_class", [BrokenNvml, FailingQueryNvml])
def test_nvml_failure_yields_no_gpus(tmp_path: Path, nvml_class: type[FakeNvml]) -> None:
    nvml = nvml_class()
    hw = detect_hardware(nvml=nvml, platform_name="Linux", disk_path=tmp_path)
    assert hw.gpus == []
    assert hw.kind is DeviceKind.CPU
    # A failed init never got a session to close; a failed query must still close it.
    assert nvml.shutdowns == (0 if nvml_class is BrokenNvml else 1)


def test_apple_silicon_parsing(tmp_path: Path) -> None:
    hw = detect_hardware(
        nvml=BrokenNvml(), platform_name="Darwin", run=apple_runner, disk_path=tmp_path
    )
    assert hw.kind is DeviceKind.APPLE
    assert hw.apple_chip == "Apple M3 Max" and hw.cpu_model == "Apple M3 Max"
    assert hw.apple_gpu_cores == 30
    assert (hw.cpu_cores, hw.cpu_physical_cores, hw.ram_mb) == (14, 14, 36 * 1024)
    assert hw.os == "Darwin"
    assert load_catalog().classify(hw).model == "apple-m3-max"


def test_apple_without_system_profiler_still_classifies(tmp_path: Path) -> None:
    def runner(argv: list[str]) -> str:
        if argv[0] == "system_profiler":
            raise TimeoutError("system_profiler hung")
        return apple_runner(argv)

    hw = detect_hardware(nvml=BrokenNvml(), platform_name="Darwin", run=runner, disk_path=tmp_path)
    assert hw.kind is DeviceKind.APPLE and hw.apple_gpu_cores is None


def test_intel_mac_is_cpu(tmp_path: Path) -> None:
    def runner(argv: list[str]) -> str:
        if argv[-1] == "machdep.cpu.brand_string":
            return "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz"
        return apple_runner(argv)

    hw = detect_hardware(nvml=BrokenNvml(), platform_name="Darwin", run=runner, disk_path=tmp_path)
    assert hw.kind is DeviceKind.CPU and hw.apple_chip is None
    assert load_catalog().classify(hw).model == "cpu-intel-core"


def test_cpuinfo_parsing() -> None:
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
    assert cpu_model_from_cpuinfo(x86) == "Intel(R) Xeon(R) Processor"
    graviton2 = "processor\t: 0\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd0c\n"
    assert cpu_model_from_cpuinfo(graviton2) == "ARM Neoverse-N1"
    assert cpu_model_from_cpuinfo("processor\t: 0\n") is None


def test_hardware_from_file_round_trips(tmp_path: Path) -> None:
    claimed = HardwareInfo(
        kind=DeviceKind.GPU,
        cpu_model="AMD EPYC 7763 64-Core Processor",
        cpu_cores=64,
        cpu_physical_cores=32,
        ram_mb=512 * 1024,
        gpus=[GpuInfo(index=0, name="NVIDIA H100 80GB HBM3", vram_mb=81559, uuid="GPU-1")],
        gpu_driver="550.54.15",
        cuda_version="12.4",
        disk_total_gb=1000.0,
        disk_free_gb=900.0,
        os="Linux",
        os_version="6.8.0",
        arch="x86_64",
    )
    path = tmp_path / "hardware.json"
    path.write_text(claimed.model_dump_json(indent=2), encoding="utf-8")
    assert hardware_from_file(path) == claimed
    assert FileDetector(path).detect() == claimed
    with pytest.raises(ValueError):
        path.write_text('{"kind": "tpu"}', encoding="utf-8")
        hardware_from_file(path)


def test_gpu_utilization_is_the_busiest_gpu_and_never_raises() -> None:
    nvml = FakeNvml()
    assert gpu_utilization(nvml) == 63.0 and nvml.shutdowns == 1
    assert gpu_utilization(BrokenNvml()) is None
    no_gpus = FakeNvml()
    no_gpus.names = []
    assert gpu_utilization(no_gpus) is None
