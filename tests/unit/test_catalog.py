"""The GPU catalog is the one source of GPU facts; these tests keep its figures sane."""

from __future__ import annotations

import dataclasses

import pytest

from runner.core.catalog import CATALOG, ExportClass, GPUModel, canonical_gpu_name, get_gpu, known_gpu_names

REQUIRED = {"H200": 141, "H100": 80, "A100": 80, "L40S": 48, "RTX4090": 24, "RTX3090": 24, "T4": 16}


def test_required_models_with_their_vram() -> None:
    for name, vram in REQUIRED.items():
        assert CATALOG[name].vram_gb == vram


@pytest.mark.parametrize("model", list(CATALOG.values()), ids=list(CATALOG))
def test_every_model_has_positive_figures(model: GPUModel) -> None:
    assert model.vram_gb > 0
    assert model.fp32_tflops > 0
    assert model.fp16_tflops > 0
    assert model.memory_bandwidth_gbs > 0
    assert model.list_price_per_hour > 0
    assert model.tier in ("datacenter", "consumer")
    assert isinstance(model.export_class, ExportClass)
    assert CATALOG[model.name] is model


def test_dense_fp16_beats_fp32_for_tensor_core_parts() -> None:
    for model in CATALOG.values():
        assert model.fp16_tflops > model.fp32_tflops, model.name


def test_models_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOG["H100"].vram_gb = 1  # type: ignore[misc]


def test_restricted_class_is_the_data_centre_parts_past_3a090a_among_the_seven() -> None:
    """The 2023 rule's threshold: total processing performance (dense FP16 TOPS x 16 bits) of
    4,800. Every data-centre part past it is restricted; the T4 (below it) is not; the consumer
    RTX 4090 is past it but kept unrestricted, the operator's decision (docs/security.md)."""
    restricted = {name for name in REQUIRED if CATALOG[name].export_class is ExportClass.RESTRICTED}
    assert restricted == {"H100", "H200", "A100", "L40S"}
    for name in REQUIRED:
        part = CATALOG[name]
        if part.tier == "datacenter":
            assert part.restricted == (part.fp16_tflops * 16 >= 4800), name
    assert CATALOG["H100"].restricted and not CATALOG["RTX4090"].restricted


def test_export_class_is_a_str_enum() -> None:
    assert ExportClass.RESTRICTED == "restricted"
    assert ExportClass("unrestricted") is ExportClass.UNRESTRICTED


def test_more_expensive_datacenter_parts_are_faster() -> None:
    price = {name: model.list_price_per_hour for name, model in CATALOG.items()}
    assert price["H200"] >= price["H100"] > price["A100"] > price["RTX3090"]
    assert CATALOG["H200"].memory_bandwidth_gbs > CATALOG["H100"].memory_bandwidth_gbs


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("h100", "H100"),
        ("H100", "H100"),
        ("RTX 4090", "RTX4090"),
        ("rtx-4090", "RTX4090"),
        ("rtx4090", "RTX4090"),
        ("rtx_3090", "RTX3090"),
        ("l40s", "L40S"),
        (" t4 ", "T4"),
        ("NVIDIA GeForce RTX 4090", "RTX4090"),
        ("NVIDIA H100 80GB", "H100"),
        ("Tesla T4", "T4"),
        ("a100-sxm4", "A100"),
    ],
)
def test_canonical_gpu_name_normalises(written: str, canonical: str) -> None:
    assert canonical_gpu_name(written) == canonical
    assert get_gpu(written) is CATALOG[canonical]


@pytest.mark.parametrize("unknown", ["H1000", "", "RTX", "4090x", "NVIDIA", "B200"])
def test_unknown_names_raise_key_error(unknown: str) -> None:
    with pytest.raises(KeyError):
        canonical_gpu_name(unknown)
    with pytest.raises(KeyError):
        get_gpu(unknown)


def test_known_gpu_names_sorted_and_complete() -> None:
    names = known_gpu_names()
    assert names == sorted(names)
    assert set(REQUIRED) <= set(names)
    assert all(canonical_gpu_name(name) == name for name in names)
