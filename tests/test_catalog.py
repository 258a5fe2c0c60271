"""The hardware catalog: data integrity, name matching and classification."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idlegrid.catalog import Catalog, HardwareModel, load_catalog, parse_catalog
from idlegrid.protocol import Classification, DeviceKind, GpuInfo, HardwareInfo

# DESIGN.md, "Token economics": io.net's 2025 multipliers, by our catalog key.
IO_NET_MULTIPLIERS = {
    "b200-sxm-180gb": 30.0,
    "h200-sxm-141gb": 12.0,
    "h100-sxm-80gb": 10.0,
    "a100-80gb": 5.0,
    "rtx-6000-ada": 4.5,
    "l40s": 3.0,
    "rtx-4080": 2.75,
    "a100-40gb": 2.0,
    "apple-m3-max": 1.5,
    "apple-m4-max": 1.5,
    "rtx-4090": 1.25,
    "rtx-3060": 0.75,
}

GPU_NAMES = {
    "NVIDIA H100 80GB HBM3": "h100-sxm-80gb",
    "NVIDIA H100 PCIe": "h100-pcie-80gb",
    "NVIDIA H100 NVL": "h100-nvl-94gb",
    "NVIDIA H200": "h200-sxm-141gb",
    "NVIDIA B200": "b200-sxm-180gb",
    "NVIDIA GeForce RTX 4090": "rtx-4090",
    "NVIDIA A100-SXM4-80GB": "a100-80gb",
    "NVIDIA A100-SXM4-40GB": "a100-40gb",
    "NVIDIA A100 80GB PCIe": "a100-80gb",
    "NVIDIA A100-PCIE-40GB": "a100-40gb",
    "NVIDIA RTX 6000 Ada Generation": "rtx-6000-ada",
    "NVIDIA RTX A6000": "rtx-a6000",
    "NVIDIA L40S": "l40s",
    "NVIDIA L40": "l40",
    "NVIDIA L4": "l4",
    "NVIDIA A10": "a10",
    "NVIDIA A10G": "a10g",
    "Tesla T4": "t4",
    "Tesla V100-SXM2-16GB": "v100-16gb",
    "Tesla V100S-PCIE-32GB": "v100-32gb",
    "NVIDIA GeForce RTX 3060": "rtx-3060",
    "NVIDIA GeForce RTX 3060 Ti": "rtx-3060-ti",
    "NVIDIA GeForce RTX 3080 LHR": "rtx-3080",
    "NVIDIA GeForce RTX 4080": "rtx-4080",
    "NVIDIA GeForce RTX 4080 SUPER": "rtx-4080-super",
    "NVIDIA GeForce RTX 4070 Ti SUPER": "rtx-4070-ti-super",
    "NVIDIA GeForce RTX 5090": "rtx-5090",
}

CPU_NAMES = {
    "Intel(R) Xeon(R) Platinum 8480+": "cpu-intel-xeon-scalable",
    "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz": "cpu-intel-xeon-scalable",
    "Intel(R) Xeon(R) Processor": "cpu-intel-xeon",
    "Intel(R) Xeon(R) CPU  @ 2.20GHz": "cpu-intel-xeon",
    "Intel Xeon Processor (Icelake)": "cpu-intel-xeon",
    "AMD EPYC 7763 64-Core Processor": "cpu-amd-epyc",
    "AMD Ryzen 9 7950X 16-Core Processor": "cpu-amd-ryzen",
    "Intel(R) Core(TM) i9-13900K": "cpu-intel-core",
    "13th Gen Intel(R) Core(TM) i9-13900K": "cpu-intel-core",
    "ARM Neoverse-N1": "cpu-arm-neoverse-n",
    "ARM Neoverse-V2": "cpu-arm-neoverse-v",
    "Ampere(R) Altra(R) Processor": "cpu-ampere-altra",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def gpu_box(*gpus: tuple[str, int]) -> HardwareInfo:
    return HardwareInfo(
        kind=DeviceKind.GPU,
        cpu_model="AMD EPYC 7763 64-Core Processor",
        cpu_cores=128,
        ram_mb=1_000_000,
        gpus=[GpuInfo(index=i, name=name, vram_mb=mb) for i, (name, mb) in enumerate(gpus)],
        disk_total_gb=1000.0,
        disk_free_gb=500.0,
        os="Linux",
        os_version="6.8",
        arch="x86_64",
    )


def box(kind: DeviceKind, cpu_model: str, **extra: object) -> HardwareInfo:
    fields: dict[str, object] = {
        "kind": kind,
        "cpu_model": cpu_model,
        "cpu_cores": 16,
        "ram_mb": 65536,
        "disk_total_gb": 500.0,
        "disk_free_gb": 100.0,
        "os": "Linux",
        "os_version": "6.8",
        "arch": "x86_64",
    }
    fields.update(extra)
    return HardwareInfo.model_validate(fields)


def test_design_multipliers_are_present_and_sourced(catalog: Catalog) -> None:
    for key, multiplier in IO_NET_MULTIPLIERS.items():
        model = catalog.get(key)
        assert model.multiplier == multiplier, key
        assert model.multiplier_source == "io.net 2025", key
    others = [m for m in catalog.models if m.key not in IO_NET_MULTIPLIERS]
    assert all(m.multiplier_source == "idlegrid estimate" for m in others)


def test_models_are_well_formed(catalog: Catalog) -> None:
    keys = [m.key for m in catalog.models]
    assert len(keys) == len(set(keys))
    for model in catalog.models:
        assert model.fp32_tflops > 0 and model.multiplier > 0, model.key
        assert model.tf32_tflops >= model.fp32_tflops * 0.99, model.key
        assert model.bf16_tflops >= model.tf32_tflops * 0.99, model.key
        # Anchored patterns are what keeps "RTX 4080" from matching "RTX 4080 SUPER".
        assert all(p.pattern.startswith("^") and p.pattern.endswith("$") for p in model.match)
        if model.kind is DeviceKind.GPU:
            assert model.vram_gb > 0, model.key
        else:
            assert model.vram_gb == 0, model.key
        if model.kind is DeviceKind.CPU:
            assert model.multiplier == 1.0 and model.fp32_tflops < 1, model.key


def test_get_unknown_key_raises(catalog: Catalog) -> None:
    with pytest.raises(KeyError):
        catalog.get("gtx-9999")


@pytest.mark.parametrize(("name", "key"), GPU_NAMES.items())
def test_gpu_names_resolve(catalog: Catalog, name: str, key: str) -> None:
    model = catalog.find(DeviceKind.GPU, name)
    assert model is not None and model.key == key


@pytest.mark.parametrize(("name", "key"), CPU_NAMES.items())
def test_cpu_names_resolve(catalog: Catalog, name: str, key: str) -> None:
    model = catalog.find(DeviceKind.CPU, name)
    assert model is not None and model.key == key


def test_near_names_are_distinct(catalog: Catalog) -> None:
    def key(kind: DeviceKind, name: str) -> str | None:
        model = catalog.find(kind, name)
        return model.key if model else None

    assert key(DeviceKind.GPU, "NVIDIA GeForce RTX 4080 SUPER") != "rtx-4080"
    assert key(DeviceKind.GPU, "NVIDIA GeForce RTX 4090 D") is None
    assert key(DeviceKind.GPU, "NVIDIA GeForce RTX 4090 Laptop GPU") is None
    assert key(DeviceKind.GPU, "NVIDIA A100-SXM4-40GB") != key(
        DeviceKind.GPU, "NVIDIA A100-SXM4-80GB"
    )
    assert key(DeviceKind.APPLE, "Apple M3") == "apple-m3"
    assert key(DeviceKind.APPLE, "Apple M3 Max") == "apple-m3-max"
    assert key(DeviceKind.APPLE, "Apple M3 Pro") == "apple-m3-pro"
    # Kinds are separate namespaces: a GPU name is not a CPU.
    assert key(DeviceKind.CPU, "NVIDIA H100 80GB HBM3") is None


def test_ambiguous_names_are_never_guessed() -> None:
    def model(key: str, pattern: str) -> HardwareModel:
        return HardwareModel(
            key, key, DeviceKind.GPU, "x", 8, 1, 1, 1, 1, "t", (re.compile(pattern),)
        )

    a, b = model("a", "^card"), model("b", "x$")
    catalog = Catalog([a, b])
    assert catalog.find(DeviceKind.GPU, "card one") is a
    assert catalog.find(DeviceKind.GPU, "card x") is None


def test_h100_box_classifies(catalog: Catalog) -> None:
    hw = gpu_box(*[("NVIDIA H100 80GB HBM3", 81559)] * 8)
    c = catalog.classify(hw)
    assert c == Classification(kind=DeviceKind.GPU, model="h100-sxm-80gb", processors=8)
    assert catalog.device_fp32_tflops(c, hw) == pytest.approx(8 * 66.9)


def test_unknown_gpu_is_unsupported(catalog: Catalog) -> None:
    c = catalog.classify(gpu_box(("NVIDIA GeForce GTX 9999", 8192)))
    assert c.model is None
    assert c.reason == "unknown_model: NVIDIA GeForce GTX 9999"


def test_mixed_gpus_are_unsupported(catalog: Catalog) -> None:
    hw = gpu_box(("NVIDIA GeForce RTX 4090", 24564), ("NVIDIA GeForce RTX 3090", 24576))
    c = catalog.classify(hw)
    assert (c.model, c.reason, c.processors) == (None, "mixed_gpus", 2)
    assert catalog.device_fp32_tflops(c, hw) == 0.0


def test_spoofed_vram_is_unsupported(catalog: Catalog) -> None:
    c = catalog.classify(gpu_box(("NVIDIA H100 80GB HBM3", 24564)))
    assert (c.model, c.reason) == (None, "vram_mismatch")


def test_gpu_kind_without_gpus(catalog: Catalog) -> None:
    c = catalog.classify(gpu_box())
    assert (c.model, c.reason, c.processors) == (None, "no_gpus", 0)


def test_virtual_xeon_is_a_supported_cpu(catalog: Catalog) -> None:
    hw = box(DeviceKind.CPU, "Intel(R) Xeon(R) Processor", cpu_cores=4, cpu_physical_cores=2)
    c = catalog.classify(hw)
    assert c == Classification(kind=DeviceKind.CPU, model="cpu-intel-xeon", processors=1)
    assert catalog.device_fp32_tflops(c, hw) == pytest.approx(2 * 0.064)
    no_physical = box(DeviceKind.CPU, "Intel(R) Xeon(R) Processor", cpu_cores=4)
    assert catalog.device_fp32_tflops(c, no_physical) == pytest.approx(4 * 0.064)


def test_qemu_cpu_is_unsupported(catalog: Catalog) -> None:
    c = catalog.classify(box(DeviceKind.CPU, "QEMU Virtual CPU version 2.5+"))
    assert c.model is None
    assert c.reason == "unknown_model: QEMU Virtual CPU version 2.5+"


def test_apple_classifies_by_chip(catalog: Catalog) -> None:
    hw = box(DeviceKind.APPLE, "Apple M3 Max", apple_chip="Apple M3 Max", arch="arm64")
    c = catalog.classify(hw)
    assert c == Classification(kind=DeviceKind.APPLE, model="apple-m3-max", processors=1)
    assert catalog.device_fp32_tflops(c, hw) == pytest.approx(14.3)
    # Without apple_chip the CPU brand string (the same thing on macOS) is used.
    assert catalog.classify(box(DeviceKind.APPLE, "Apple M1")).model == "apple-m1"


def test_bad_data_is_rejected() -> None:
    entry = """
[[model]]
key = "x"
name = "X"
kind = "{kind}"
vendor = "v"
vram_gb = 1
fp32_tflops = 1.0
tf32_tflops = 1.0
bf16_tflops = 1.0
multiplier = 1.0
multiplier_source = "test"
match = ['^x$']
"""
    assert parse_catalog(entry.format(kind="gpu")).get("x").kind is DeviceKind.GPU
    with pytest.raises(ValueError, match="duplicate"):
        parse_catalog(entry.format(kind="gpu") * 2)
    with pytest.raises(ValueError, match="unknown kind"):
        parse_catalog(entry.format(kind="tpu"))
    with pytest.raises(ValueError, match="must be a number"):
        parse_catalog(entry.format(kind="gpu").replace("vram_gb = 1", 'vram_gb = "1"'))


@given(
    # Any text a wire model holds (it refuses NUL: docs/protocol.md, Values).
    names=st.lists(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            min_size=1,
            max_size=128,
        ),
        min_size=1,
        max_size=4,
    ),
    vram_mb=st.integers(min_value=0, max_value=10_000_000),
)
def test_classify_never_raises(names: list[str], vram_mb: int) -> None:
    catalog = load_catalog()
    hw = gpu_box(*[(name, vram_mb) for name in names])
    c = catalog.classify(hw)
    assert (c.model is None) == (c.reason is not None)
    assert catalog.device_fp32_tflops(c, hw) >= 0
    cpu = catalog.classify(box(DeviceKind.CPU, names[0]))
    assert cpu.processors == 1
