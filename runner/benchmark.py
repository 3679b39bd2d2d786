"""How fast a node really is: the join benchmark and the checker's timed challenge.

``measure`` runs on a provider machine when it joins (``runner node join``): matmul TFLOPS and
memory bandwidth with torch, on the GPU when there is one (FP16, as the catalog's peak figures
are), else on the CPU (FP32). Its figures become the node's *verified benchmark*.

A **challenge** is how the checker keeps nodes honest later. The control plane sends a seed; the
node's agent builds the same random matrices, multiplies them with a differently permuted A each
rep until the reps are done or a deadline passes, and returns every row's squared norm summed
over the reps. The control plane times the call itself (a node can be slow on purpose, never
faster than it is) and checks a few random rows exactly: a row's squared norm cannot be had
without computing that row of every product, and the node does not know which rows will be
checked. A node that claims an H100 but computes like a T4 falls far below its expected
figure and is suspended. In CPU mode the expected figure is the node's own verified benchmark.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BenchResult:
    device: str
    dtype: str
    tflops: float
    bandwidth_gbs: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device() -> tuple[Any, Any, str]:
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16, "float16"
    return torch.device("cpu"), torch.float32, "float32"


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(seconds: float = 0.6, n: int | None = None) -> BenchResult:
    """Matmul TFLOPS and copy bandwidth on this machine's best device, about ``seconds`` long."""
    import torch

    device, dtype, dtype_name = _device()
    n = n or (4096 if device.type == "cuda" else 512)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: kernels, thread pool
    _sync(device)
    reps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds / 2:
        torch.matmul(a, b)
        reps += 1
    _sync(device)
    mm_s = time.perf_counter() - started
    tflops = 2 * n**3 * reps / mm_s / 1e12

    src = torch.empty(16 * 1024 * 1024, device=device, dtype=torch.float32)  # 64 MiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    copies, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds / 2:
        dst.copy_(src)
        copies += 1
    _sync(device)
    copy_s = time.perf_counter() - started
    bandwidth = 2 * src.numel() * 4 * copies / copy_s / 1e9  # read + write
    return BenchResult(
        device=device.type,
        dtype=dtype_name,
        tflops=round(tflops, 4),
        bandwidth_gbs=round(bandwidth, 2),
        seconds=round(mm_s + copy_s, 3),
    )


# ----------------------------------------------------------------------------- challenges
@dataclass(frozen=True)
class Challenge:
    """Multiply ``A[:, perm_k] @ B`` for k = 0, 1, ... until ``reps`` are done or ``deadline_s``
    has passed. Each k permutes A's columns differently, so no product can be had from another:
    every rep is a full ``2 n^3`` multiply. The matrices come from ``seed`` and are built before
    the timed part (``prepare_challenge``); the permutations come from ``perm_seed``, which the
    node learns only when the clock starts, so nothing can be computed ahead."""

    seed: int
    perm_seed: int
    n: int
    reps: int
    deadline_s: float

    @property
    def flop_per_rep(self) -> float:
        return 2.0 * self.n**3


def size_challenge(
    expected_tflops: float, *, seconds: float, max_n: int, seed: int, perm_seed: int, deadline_s: float
) -> Challenge:
    """Work an honest node of ``expected_tflops`` does in about ``seconds``: 16 reps of the
    largest ``n`` that fits (at most ``max_n``), more reps when ``n`` is capped (at most 64)."""
    flop = max(expected_tflops, 1e-4) * 1e12 * seconds
    n = int(min(max((flop / 32.0) ** (1 / 3), 128), max_n)) // 64 * 64
    reps = int(min(max(math.ceil(flop / (2.0 * n**3)), 1), 64))
    return Challenge(seed=seed, perm_seed=perm_seed, n=n, reps=reps, deadline_s=deadline_s)


def challenge_matrices(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def challenge_permutations(c: Challenge) -> np.ndarray:
    rng = np.random.default_rng(c.perm_seed)
    return np.stack([rng.permutation(c.n) for _ in range(c.reps)])


class ChallengeSolver:
    """Node side. ``prepare`` builds the matrices on the device (not timed); ``solve`` does as many
    reps as fit before the deadline and returns each row's squared norm summed over them."""

    def __init__(self) -> None:
        self._prepared: tuple[int, int, Any, Any] | None = None

    def prepare(self, seed: int, n: int) -> None:
        import torch

        device, _, _ = _device()
        a, b = challenge_matrices(seed, n)
        self._prepared = (seed, n, torch.from_numpy(a).to(device), torch.from_numpy(b).to(device))
        _sync(device)

    def solve(self, c: Challenge) -> dict[str, Any]:
        import torch

        # Like the join benchmark, use the whole machine: the agent is a Ray actor holding no CPUs,
        # so Ray started it with one OpenMP thread, which would halve a 2-core node's figure.
        torch.set_num_threads(os.cpu_count() or 1)
        if self._prepared is None or self._prepared[:2] != (c.seed, c.n):
            self.prepare(c.seed, c.n)
        assert self._prepared is not None
        _, _, a, b = self._prepared
        device = a.device
        started = time.perf_counter()
        perms = torch.from_numpy(challenge_permutations(c)).to(device)
        total = torch.zeros(c.n, dtype=torch.float64, device=device)
        done = 0
        for k in range(c.reps):
            product = torch.matmul(torch.index_select(a, 1, perms[k]), b)
            total += (product.double() ** 2).sum(dim=1)
            done = k + 1
            _sync(device)
            if time.perf_counter() - started > c.deadline_s:
                break
        self._prepared = None
        return {
            "row_norms": total.cpu().numpy().tolist(),
            "reps_done": done,
            "elapsed_s": time.perf_counter() - started,
            "device": device.type,
        }


def verify_answer(c: Challenge, answer: dict[str, Any], *, rows: int = 2, seed: int = 0) -> str | None:
    """Control side: recompute ``rows`` random rows exactly over the reps the node says it did;
    None when they match, else why not."""
    norms, done = answer.get("row_norms"), answer.get("reps_done")
    if not isinstance(norms, list) or len(norms) != c.n:
        return f"answer has {len(norms) if isinstance(norms, list) else 'no'} row norms, expected {c.n}"
    if not isinstance(done, int) or not 1 <= done <= c.reps:
        return f"answer claims {done!r} reps of {c.reps}"
    a, b = challenge_matrices(c.seed, c.n)
    b64 = b.astype(np.float64)
    perms = challenge_permutations(c)
    picks = np.random.default_rng(seed).choice(c.n, size=min(rows, c.n), replace=False)
    for i in picks:
        row = a[i].astype(np.float64)
        exact = sum(float(np.sum((row[perms[k]] @ b64) ** 2)) for k in range(done))
        got = float(norms[i])
        if not np.isfinite(got) or abs(got - exact) > 1e-3 * max(abs(exact), 1.0):
            return f"row {int(i)}: squared norms sum to {got:.6g}, expected {exact:.6g}"
    return None


#: No real part computes above its catalog peak. Past this multiple of the claimed model's dense
#: FP16 peak a machine holds a faster GPU than it declares: an export-controlled H100 passed off as
#: an RTX 4090, say, which would serve tenants export control keeps from it.
PEAK_MARGIN = 1.2


def ceiling_tflops(gpu_model: str | None, simulated: bool) -> float | None:
    """The most a node of ``gpu_model`` can measure (None where nothing bounds it: a CPU-only node,
    or a simulated GPU in CPU mode, whose figure is the CPU's own)."""
    from runner.core.catalog import get_gpu

    if simulated or not gpu_model:
        return None
    return PEAK_MARGIN * get_gpu(gpu_model).fp16_tflops


def judge(measured_tflops: float, expected_tflops: float, tolerance: float, ceiling: float | None = None) -> str | None:
    """None when the node computes at least ``tolerance`` of what it is expected to and no more
    than ``ceiling`` (``ceiling_tflops``) can; else why not."""
    if ceiling is not None and measured_tflops > ceiling:
        return (
            f"measured {measured_tflops:.4g} TFLOPS, above the {ceiling:.4g} the declared GPU can reach: "
            "the machine holds a faster GPU than it declares"
        )
    if expected_tflops <= 0:
        return None
    if measured_tflops < tolerance * expected_tflops:
        return f"measured {measured_tflops:.4g} TFLOPS, expected at least {tolerance:.0%} of {expected_tflops:.4g}"
    return None


def expected_tflops(gpu_model: str | None, simulated: bool, verified_tflops: float) -> float:
    """What a node should reach in a challenge: its own verified benchmark in CPU mode (and for
    CPU-only nodes), else a conservative share of the catalog's FP16 peak for its GPU model."""
    from runner.core.catalog import get_gpu

    if simulated or not gpu_model:
        return verified_tflops
    return 0.25 * get_gpu(gpu_model).fp16_tflops  # dense FP16 matmul reaches well above this on real parts
