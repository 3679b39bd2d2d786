"""Smoke workload: checks Python, torch and a seeded matmul, then prints one JSON line.

Run as ``python -m workloads.smoke``. Human log lines go first (all start with ``smoke:``);
the LAST line of stdout is one JSON object, so callers parse ``lines[-1]`` only.

Environment knobs (used by runner's tests):
    SMOKE_FAIL=1        print everything as usual, then exit 1 (tests retries)
    SMOKE_SLEEP=<sec>   sleep before finishing, in small steps (tests long-running containers);
                        SIGTERM prints ``smoke: got SIGTERM`` and exits 143 (128 + 15)

Exit codes: 0 ok, 1 matmul check failed / too-old Python / SMOKE_FAIL, 2 bad SMOKE_SLEEP, 143 SIGTERM.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import time
from types import FrameType
from typing import Any

MIN_PYTHON = (3, 11)
N = 256  # small enough for any CPU in well under a second, big enough to exercise BLAS
SEED = 0


def log(message: str) -> None:
    """Print a human line, flushed so `docker logs -f` shows it at once."""
    print(f"smoke: {message}", flush=True)


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Exit like a shell-killed process would; PID 1 in a container ignores SIGTERM otherwise."""
    log("got SIGTERM")
    sys.exit(128 + signal.SIGTERM)


def matmul_check_torch(torch: Any, device: str) -> tuple[float, float, bool]:
    """Seeded float32 matmul vs. a float64 reference; returns (gflops, max_abs_err, ok)."""
    gen = torch.Generator().manual_seed(SEED)  # CPU generator: same inputs on every device
    a = torch.randn(N, N, generator=gen, dtype=torch.float32)
    b = torch.randn(N, N, generator=gen, dtype=torch.float32)
    ref = a.double() @ b.double()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would blow the tolerance
    a_dev, b_dev = a.to(device), b.to(device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    c = a_dev @ b_dev  # warm-up (BLAS init, CUDA context) is not timed
    sync()
    iters, start = 0, time.perf_counter()
    while True:
        c = a_dev @ b_dev
        iters += 1
        if iters % 4 == 0:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= 0.05 or iters >= 4096:
                break
    max_abs_err = float((c.double().cpu() - ref).abs().max())
    tol = 1e-4 * float(ref.abs().max())  # float32 over 256-term dots: ~1e-6 relative
    return 2 * N**3 * iters / elapsed / 1e9, max_abs_err, max_abs_err <= tol


def matmul_check_python(n: int = 32) -> tuple[float, float, bool]:
    """Fallback without torch: a tiny pure-Python matmul, checked against a known identity."""
    import random

    rng = random.Random(SEED)
    a = [[rng.uniform(-1, 1) for _ in range(n)] for _ in range(n)]
    eye = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    start = time.perf_counter()
    c = [[sum(a[i][k] * eye[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
    elapsed = max(time.perf_counter() - start, 1e-9)
    err = max(abs(c[i][j] - a[i][j]) for i in range(n) for j in range(n))
    return 2 * n**3 / elapsed / 1e9, err, err == 0.0


def sleep_steps(seconds: float) -> None:
    """Sleep in 0.1 s steps so SIGTERM is handled promptly; a heartbeat line each second."""
    log(f"sleeping {seconds:g}s")
    deadline = time.monotonic() + seconds
    next_beat = time.monotonic() + 1.0
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.1, left))
        if time.monotonic() >= next_beat and deadline - time.monotonic() > 0:
            log(f"still sleeping, {deadline - time.monotonic():.0f}s left")
            next_beat += 1.0


def main() -> int:
    """Run the checks; return the process exit code."""
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        sleep_s = float(os.environ.get("SMOKE_SLEEP") or 0)
    except ValueError:
        log(f"SMOKE_SLEEP must be a number of seconds, got {os.environ['SMOKE_SLEEP']!r}")
        return 2
    result: dict[str, Any] = {"smoke": "ok", "python": platform.python_version()}
    log(f"python {result['python']}")
    ok = sys.version_info[:2] >= MIN_PYTHON
    if not ok:
        log(f"python {'.'.join(map(str, MIN_PYTHON))}+ required")
        result["reason"] = "python too old"

    try:
        import torch
    except ImportError as exc:  # report, then still do a (pure-Python) compute check
        log(f"torch missing ({exc})")
        result.update(torch=None, device="cpu", device_name=platform.machine())
        gflops, err, mm_ok = matmul_check_python()
        what = "32x32 pure-Python"
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        name = torch.cuda.get_device_name(0) if device == "cuda" else platform.machine()
        result.update(torch=torch.__version__, device=device, device_name=name)
        log(f"torch {torch.__version__} on {device} ({name})")
        gflops, err, mm_ok = matmul_check_torch(torch, device)
        what = f"{N}x{N} float32"
    result.update(matmul_gflops=round(gflops, 2), max_abs_err=err)
    log(f"matmul {what}: {gflops:.2f} GFLOPS, max abs err {err:.3g} -> {'ok' if mm_ok else 'FAIL'}")
    if not mm_ok:
        ok = False
        result["reason"] = "matmul mismatch"

    if sleep_s > 0:
        sleep_steps(sleep_s)
    if os.environ.get("SMOKE_FAIL") == "1":
        ok = False
        result["reason"] = "SMOKE_FAIL=1"
    if not ok:
        result["smoke"] = "fail"
    print(json.dumps(result), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
