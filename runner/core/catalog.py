"""The GPU catalog: the one source of GPU facts in runner.

Spec validation (is ``H1000`` a GPU?), policy (is this part export-controlled?), placement
(does a node's model have enough VRAM?) and pricing (what does a GPU-hour cost when a provider
names no price?) all read the same table here, so they can never disagree about a model.

Figures are public vendor numbers for the common variant of each part (SXM for H100/H200/A100):
``fp16_tflops`` is *dense* FP16/BF16 tensor throughput (no 2:4 sparsity; FP32 accumulate on the
GeForce cards), ``fp32_tflops`` is plain (non-tensor) FP32. ``list_price_per_hour`` is a
plausible on-demand market price per GPU-hour in USD (2024-2025 rental marketplaces), used only
as a default when a provider states none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class ExportClass(StrEnum):
    """Whether US export rules restrict where a part may be placed.

    ``RESTRICTED`` covers data-centre accelerators under US export controls (ECCN 3A090 /
    4A090: A100, H100, H200, L40S and their kin); policy refuses to place them in embargoed
    countries. By the 2023 rule's measure (total processing performance, TPP = dense TOPS x bit
    length, against 4,800) a part is restricted from TPP 4,800 on: the T4 (1,040) and RTX 3090 are
    below it; the GeForce RTX 4090 (about 5,300 with FP16 accumulate) is above it and needs a
    licence for China since November 2023, but is kept unrestricted here as a consumer part an
    operator may decide on per network (a decision to review, named in ``docs/security.md``).
    """

    RESTRICTED = "restricted"
    UNRESTRICTED = "unrestricted"


@dataclass(frozen=True)
class GPUModel:
    """Static facts about one GPU model; immutable so the catalog can be shared freely."""

    name: str
    vram_gb: int
    fp32_tflops: float
    fp16_tflops: float
    memory_bandwidth_gbs: float
    export_class: ExportClass
    list_price_per_hour: float
    tier: str  # "datacenter" or "consumer"

    @property
    def restricted(self) -> bool:
        """True for export-controlled parts."""
        return self.export_class is ExportClass.RESTRICTED


_R = ExportClass.RESTRICTED
_U = ExportClass.UNRESTRICTED

#: Every GPU model runner knows, keyed by canonical name.
CATALOG: dict[str, GPUModel] = {
    m.name: m
    for m in (
        # NVIDIA H200 SXM: 141 GB HBM3e, 4.8 TB/s, 989 dense BF16 TFLOPS.
        GPUModel("H200", 141, 67.0, 989.5, 4800.0, _R, 3.50, "datacenter"),
        # NVIDIA H100 SXM 80GB: HBM3, 3.35 TB/s.
        GPUModel("H100", 80, 67.0, 989.5, 3350.0, _R, 2.50, "datacenter"),
        # NVIDIA A100 SXM 80GB: HBM2e, 2.04 TB/s, 312 dense BF16 TFLOPS.
        GPUModel("A100", 80, 19.5, 312.0, 2039.0, _R, 1.50, "datacenter"),
        # NVIDIA L40S: 48 GB GDDR6, 864 GB/s, 362 dense FP16 TFLOPS: a total processing
        # performance of 362 x 16 = 5,792, past the 4,800 of ECCN 3A090.a (the 2023 rule).
        GPUModel("L40S", 48, 91.6, 362.1, 864.0, _R, 0.90, "datacenter"),
        # NVIDIA T4: 16 GB GDDR6, 320 GB/s, 65 FP16 tensor TFLOPS.
        GPUModel("T4", 16, 8.1, 65.0, 320.0, _U, 0.35, "datacenter"),
        # GeForce RTX 4090: 24 GB GDDR6X, 1008 GB/s, 165 dense FP16 (FP32 accumulate).
        GPUModel("RTX4090", 24, 82.6, 165.2, 1008.0, _U, 0.40, "consumer"),
        # GeForce RTX 3090: 24 GB GDDR6X, 936 GB/s, 71 dense FP16 (FP32 accumulate).
        GPUModel("RTX3090", 24, 35.6, 71.0, 936.0, _U, 0.22, "consumer"),
    )
}

# Marketing prefixes people paste from `nvidia-smi` or provider pages.
_PREFIXES = ("NVIDIA", "GEFORCE", "TESLA")
# Suffixes that name the usual variant the catalog already describes.
_SUFFIXES = ("SXM5", "SXM4", "SXM", "80GB", "141GB")


def _squash(name: str) -> str:
    """Upper-case and drop spaces, dashes, underscores and dots: 'rtx-4090' -> 'RTX4090'."""
    return re.sub(r"[\s\-_.]+", "", name).upper()


def canonical_gpu_name(name: str) -> str:
    """The catalog key for a user-written GPU name.

    Case-insensitive and tolerant of separators and vendor prefixes: ``"rtx 4090"``,
    ``"RTX-4090"``, ``"NVIDIA GeForce RTX 4090"`` and ``"h100"`` all resolve. Raises ``KeyError``
    for a name the catalog does not know.
    """
    if not isinstance(name, str):
        raise KeyError(name)
    key = _squash(name)
    if key in CATALOG:
        return key
    changed = True
    while changed and key:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                key, changed = key[len(prefix) :], True
        for suffix in _SUFFIXES:
            if key.endswith(suffix) and len(key) > len(suffix):
                key, changed = key[: -len(suffix)], True
        if key in CATALOG:
            return key
    raise KeyError(name)


def known_gpu_names() -> list[str]:
    """Canonical names of every catalog model, sorted (for error messages and help)."""
    return sorted(CATALOG)


def get_gpu(name: str) -> GPUModel:
    """The catalog entry for ``name`` (any spelling ``canonical_gpu_name`` accepts)."""
    return CATALOG[canonical_gpu_name(name)]
