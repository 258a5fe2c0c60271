"""The hardware catalog: which models the network knows and what each can do.

The data lives in ``hardware.toml`` next to this module (units and sources are in its header).
This module is pure: it reads that file once (``load_catalog`` is cached), and maps what an
agent detected (:class:`~idlegrid.protocol.HardwareInfo`) to a catalog model
(:class:`~idlegrid.protocol.Classification`).

Rules the rest of the system relies on:

- A name resolves to a model only when exactly one model's patterns match it. Two matches
  mean the catalog is ambiguous, and an ambiguous name is treated as unknown: the catalog
  never guesses, because a model decides rewards and stakes.
- A GPU must also carry at least 85% of its model's memory; a device whose name says H100 but
  whose memory does not is not an H100 (``vram_mismatch``).
- Unsupported hardware gets ``model=None`` and a machine-readable ``reason``.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

from idlegrid.protocol import Classification, DeviceKind, HardwareInfo

__all__ = ["VRAM_TOLERANCE", "Catalog", "HardwareModel", "load_catalog", "parse_catalog"]

# A GPU must report at least this share of its model's memory. Drivers, ECC and firmware
# reservations take a few percent (an 80 GB H100 reports 79.6 GiB), and vendors count GB where
# NVML counts MiB; 85% absorbs all of that but not a smaller part sold as a bigger one.
VRAM_TOLERANCE = 0.85


@dataclass(frozen=True, slots=True)
class HardwareModel:
    """One catalog entry. Figures are peak dense TFLOPS (per core for CPUs)."""

    key: str
    name: str
    kind: DeviceKind
    vendor: str
    vram_gb: float
    fp32_tflops: float
    tf32_tflops: float
    bf16_tflops: float
    multiplier: float
    multiplier_source: str
    match: tuple[re.Pattern[str], ...]

    def matches(self, name: str) -> bool:
        """Whether any pattern matches ``name`` (already whitespace-normalised)."""
        return any(pattern.search(name) for pattern in self.match)


def _normalise(name: str) -> str:
    # NVML and /proc/cpuinfo pad names with runs of spaces ("Intel(R) Xeon(R) CPU  @ 2.2GHz").
    return " ".join(name.split())


class Catalog:
    """An immutable, validated set of hardware models."""

    def __init__(self, models: Iterable[HardwareModel]) -> None:
        self.models: tuple[HardwareModel, ...] = tuple(models)
        self._by_key: dict[str, HardwareModel] = {}
        for model in self.models:
            if model.key in self._by_key:
                raise ValueError(f"duplicate catalog key {model.key!r}")
            if not isinstance(model.kind, DeviceKind):
                raise ValueError(f"{model.key}: kind {model.kind!r} is not a DeviceKind")
            if model.fp32_tflops <= 0 or model.multiplier < 0 or model.vram_gb < 0:
                raise ValueError(f"{model.key}: figures must be positive")
            if not model.match:
                raise ValueError(f"{model.key}: no match patterns")
            self._by_key[model.key] = model

    def get(self, key: str) -> HardwareModel:
        """The model with this key; ``KeyError`` when there is none."""
        return self._by_key[key]

    def find(self, kind: DeviceKind, name: str) -> HardwareModel | None:
        """The one model of ``kind`` whose patterns match ``name``; None if none or several.
        Remembered for the last names asked (a fleet registers a few hundred names, and
        each look-up tries every model's patterns)."""
        return self._find(kind, _normalise(name))

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - a catalog lives as long as its process
    def _find(self, kind: DeviceKind, normalised: str) -> HardwareModel | None:
        found = [m for m in self.models if m.kind is kind and m.matches(normalised)]
        return found[0] if len(found) == 1 else None

    def classify(self, hw: HardwareInfo) -> Classification:
        """Map detected hardware to a catalog model, or to a reason it is unsupported."""
        if hw.kind is DeviceKind.GPU:
            return self._classify_gpus(hw)
        name = hw.cpu_model
        if hw.kind is DeviceKind.APPLE and hw.apple_chip is not None:
            name = hw.apple_chip
        model = self.find(hw.kind, name)
        if model is None:
            return _unsupported(hw.kind, 1, f"unknown_model: {name}")
        return Classification(kind=hw.kind, model=model.key, processors=1)

    def _classify_gpus(self, hw: HardwareInfo) -> Classification:
        count = len(hw.gpus)
        if count == 0:
            return _unsupported(DeviceKind.GPU, 0, "no_gpus")
        models: list[HardwareModel] = []
        for gpu in hw.gpus:
            model = self.find(DeviceKind.GPU, gpu.name)
            if model is None:
                return _unsupported(DeviceKind.GPU, count, f"unknown_model: {gpu.name}")
            models.append(model)
        # One device is one rentable unit; a mixed box would be priced and proved as neither.
        if len({m.key for m in models}) > 1:
            return _unsupported(DeviceKind.GPU, count, "mixed_gpus")
        model = models[0]
        floor_mb = VRAM_TOLERANCE * model.vram_gb * 1024
        if any(gpu.vram_mb < floor_mb for gpu in hw.gpus):
            return _unsupported(DeviceKind.GPU, count, "vram_mismatch")
        return Classification(kind=DeviceKind.GPU, model=model.key, processors=count)

    def device_fp32_tflops(self, c: Classification, hw: HardwareInfo) -> float:
        """Peak FP32 TFLOPS of the whole device; 0.0 when it is unsupported."""
        # SMT siblings share the core's vector units, so physical cores are what count.
        return self.fp32_tflops_of(c, hw.cpu_physical_cores or hw.cpu_cores)

    def fp32_tflops_of(self, c: Classification, cpu_cores: int) -> float:
        """``device_fp32_tflops`` given the CPU's physical cores (what a CPU is rated by)."""
        if c.model is None:
            return 0.0
        model = self.get(c.model)
        if model.kind is DeviceKind.GPU:
            return model.fp32_tflops * c.processors
        if model.kind is DeviceKind.APPLE:
            return model.fp32_tflops
        return model.fp32_tflops * cpu_cores


def _unsupported(kind: DeviceKind, processors: int, reason: str) -> Classification:
    return Classification(kind=kind, model=None, processors=processors, reason=reason)


def _field(table: Mapping[str, object], name: str, where: str) -> object:
    if name not in table:
        raise ValueError(f"{where}: missing field {name!r}")
    return table[name]


def _str(table: Mapping[str, object], name: str, where: str) -> str:
    value = _field(table, name, where)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: {name} must be a non-empty string")
    return value


def _float(table: Mapping[str, object], name: str, where: str) -> float:
    value = _field(table, name, where)
    # bool is an int subclass; "vram_gb = true" is a typo, not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: {name} must be a number")
    return float(value)


def _patterns(table: Mapping[str, object], where: str) -> tuple[re.Pattern[str], ...]:
    value = _field(table, "match", where)
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"{where}: match must be a list of strings")
    try:
        return tuple(re.compile(p, re.IGNORECASE) for p in value)
    except re.error as exc:
        raise ValueError(f"{where}: bad pattern: {exc}") from exc


def _model(table: Mapping[str, object], index: int) -> HardwareModel:
    where = f"model #{index}"
    key = _str(table, "key", where)
    where = f"model {key!r}"
    kind = _str(table, "kind", where)
    try:
        device_kind = DeviceKind(kind)
    except ValueError:
        raise ValueError(f"{where}: unknown kind {kind!r}") from None
    return HardwareModel(
        key=key,
        name=_str(table, "name", where),
        kind=device_kind,
        vendor=_str(table, "vendor", where),
        vram_gb=_float(table, "vram_gb", where),
        fp32_tflops=_float(table, "fp32_tflops", where),
        tf32_tflops=_float(table, "tf32_tflops", where),
        bf16_tflops=_float(table, "bf16_tflops", where),
        multiplier=_float(table, "multiplier", where),
        multiplier_source=_str(table, "multiplier_source", where),
        match=_patterns(table, where),
    )


def parse_catalog(text: str) -> Catalog:
    """Build a catalog from TOML text in the ``hardware.toml`` format; ``ValueError`` if bad."""
    data = tomllib.loads(text)
    tables = data.get("model")
    if not isinstance(tables, list) or not tables:
        raise ValueError("catalog has no [[model]] tables")
    models: list[HardwareModel] = []
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ValueError(f"model #{index} is not a table")
        models.append(_model(table, index))
    return Catalog(models)


@functools.cache
def load_catalog() -> Catalog:
    """The packaged catalog, read and validated once per process."""
    text = resources.files(__name__).joinpath("hardware.toml").read_text(encoding="utf-8")
    return parse_catalog(text)
