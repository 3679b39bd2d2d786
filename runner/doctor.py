"""``runner node doctor``: what a provider's machine with NVIDIA GPUs must pass before it joins.

Each check runs the real thing on this machine, the way a workload would use it: NVML finds the
GPUs; the node benchmark runs on CUDA; one DDP step with NCCL; the inference model embeds on
CUDA; the Docker engine hands a GPU to a container (the device request the runtime makes); the
encoder NVENC (``h264_nvenc`` through PyAV) encodes a frame. On a machine without an NVIDIA GPU
every check says ``not run: no GPU`` and the doctor exits 0: there is nothing to check, and a
CPU-only machine joins as a CPU node.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OK, FAILED, NOT_RUN = "ok", "failed", "not run"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, FAILED or NOT_RUN
    detail: str


def _gpus() -> tuple[list[str], str]:
    """The names NVML reports, and why there are none when there are none."""
    try:
        import pynvml
    except ImportError:
        return [], "no NVML library (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"NVML does not start ({exc}): no NVIDIA driver"
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else name)
        return names, "" if names else "NVML finds no GPU"
    finally:
        pynvml.nvmlShutdown()


def _benchmark() -> str:
    from runner.benchmark import measure

    result = measure(seconds=1.0)
    if result.device != "cuda":
        raise RuntimeError(f"the benchmark ran on {result.device}, not CUDA (torch.cuda.is_available() is False)")
    return f"{result.tflops:.1f} TFLOPS ({result.dtype}), {result.bandwidth_gbs:.0f} GB/s"


def _nccl_step() -> str:
    """One DDP step of a small model with NCCL, as a training gang of one worker."""
    import torch
    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 64).cuda(), device_ids=[0])
        loss = model(torch.randn(32, 64, device="cuda")).square().mean()
        loss.backward()
        torch.cuda.synchronize()
        return f"loss {loss.item():.4f}, NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}"
    finally:
        dist.destroy_process_group()


def _inference() -> str:
    from workloads.inference.minilm import MiniLMBackend
    from workloads.inference.settings import ServerSettings

    backend = MiniLMBackend(ServerSettings())
    backend.load()
    if backend.device != "cuda":
        raise RuntimeError(f"the model loaded on {backend.device}, not CUDA")
    vectors = backend.run([p.payload for p in backend.prepare(["a GPU near you", "rented by the second"])])
    return f"{len(vectors)} embeddings of {len(vectors[0])} floats on CUDA"


def _container_gpu() -> str:
    """The device request the Docker runtime makes for a replica on a real GPU."""
    import docker

    client = docker.from_env()
    out = client.containers.run(
        "runner/smoke:latest",
        ["nvidia-smi", "-L"],
        remove=True,
        device_requests=[docker.types.DeviceRequest(count=1, capabilities=[["gpu"]])],
    )
    return out.decode().strip().splitlines()[0]


def _nvenc() -> str:
    import av
    import numpy as np

    codec = av.CodecContext.create("h264_nvenc", "w")
    codec.width, codec.height, codec.pix_fmt = 1280, 720, "yuv420p"
    frame = av.VideoFrame.from_ndarray(np.zeros((720, 1280, 3), dtype=np.uint8), format="rgb24").reformat(
        format="yuv420p"
    )
    packets = codec.encode(frame) + codec.encode(None)
    return f"1280x720 frame encoded: {sum(p.size for p in packets)} bytes"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("benchmark on CUDA", _benchmark),
    ("a DDP step with NCCL", _nccl_step),
    ("the inference model on CUDA", _inference),
    ("a GPU in a container (Docker device request)", _container_gpu),
    ("NVENC (h264_nvenc)", _nvenc),
]


def run_checks(checks: list[tuple[str, Callable[[], str]]] = CHECKS, gpus: Callable[[], Any] = _gpus) -> list[Check]:
    """Every check's outcome, NVML's first; none of them raises."""
    names, why_none = gpus()
    if not names:
        return [Check("NVML finds the GPUs", NOT_RUN, f"no GPU: {why_none}")] + [
            Check(name, NOT_RUN, "no GPU") for name, _ in checks
        ]
    results = [Check("NVML finds the GPUs", OK, ", ".join(names))]
    for name, check in checks:
        try:
            results.append(Check(name, OK, check()))
        except Exception as exc:  # noqa: BLE001 - each failure is reported, the next check still runs
            results.append(Check(name, FAILED, f"{type(exc).__name__}: {exc}"))
    return results
