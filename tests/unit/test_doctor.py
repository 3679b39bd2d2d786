"""`runner node doctor` on this machine (no GPU: every check is 'not run'), and how it reports a
machine whose GPUs are there but one check fails."""

from __future__ import annotations

import os
import subprocess
import sys

from runner.doctor import FAILED, NOT_RUN, OK, run_checks


def test_without_a_gpu_every_check_is_not_run_and_the_doctor_exits_0() -> None:
    results = run_checks()
    assert [r.status for r in results] == [NOT_RUN] * len(results)
    assert results[0].detail.startswith("no GPU: ")
    out = subprocess.run(
        [sys.executable, "-m", "runner.cli", "node", "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "not run: no GPU" in out.stdout and "NVENC" in out.stdout


def test_a_failing_check_is_reported_and_the_others_still_run() -> None:
    def broken() -> str:
        raise RuntimeError("the benchmark ran on cpu, not CUDA")

    results = run_checks(
        [("benchmark on CUDA", broken), ("NVENC (h264_nvenc)", lambda: "encoded")],
        gpus=lambda: (["NVIDIA H100 80GB HBM3"], ""),
    )
    assert [(r.name, r.status) for r in results] == [
        ("NVML finds the GPUs", OK),
        ("benchmark on CUDA", FAILED),
        ("NVENC (h264_nvenc)", OK),
    ]
    assert results[1].detail == "RuntimeError: the benchmark ran on cpu, not CUDA"
