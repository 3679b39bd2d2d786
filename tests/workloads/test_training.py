"""The training workload as real processes: one worker and two gloo workers on 127.0.0.1 train
and their loss falls; the report lines follow the contract; flags and env are validated.

The helpers here (``TrainProc``, ``TINY``, ``free_port``) are shared by the other
test_training_*.py modules.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from workloads.training.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
DIST_VARS = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "RUNNER_CHECKPOINT_URI",
    "RUNNER_CHECKPOINT_EVERY",
    "RUNNER_CHECKPOINT_KEEP",
)
# A model small enough for a few milliseconds per step on one core; the loss still falls fast.
TINY = [
    "--d-model",
    "64",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--seq-len",
    "32",
    "--batch-size",
    "8",
    "--corpus-bytes",
    "200000",
    "--val-batches",
    "2",
    "--warmup-steps",
    "5",
    "--threads",
    "1",
]
PROGRESS_KEYS = {"runner", "step", "total_steps", "loss", "steps_per_s", "tokens_per_s", "epoch"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TrainProc:
    """``python -m workloads.training`` as a subprocess; stdout lines are collected as they come
    so a test can poll for a report while the run goes on."""

    def __init__(self, args: list[str], **env: str) -> None:
        full_env = {k: v for k, v in os.environ.items() if k not in DIST_VARS and not k.startswith("TRAIN_")}
        full_env.update(PYTHONUNBUFFERED="1", **env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workloads.training", *args],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def reports(self, kind: str) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            if line.startswith("{"):
                obj = json.loads(line)  # every JSON-looking line must parse
                if obj.get("runner") == kind:
                    out.append(obj)
        return out

    def wait_report(
        self, kind: str, pred: Callable[[dict[str, Any]], bool] = lambda r: True, timeout_s: float = 60
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.proc.poll() is not None and self._reader.is_alive() is False:
                hits = [r for r in self.reports(kind) if pred(r)]
                if not hits:
                    raise AssertionError(
                        f"exited {self.proc.returncode} before a matching {kind!r} report:\n" + self.output()[-3000:]
                    )
            return next((r for r in self.reports(kind) if pred(r)), None)

        return wait_for(found, timeout_s=timeout_s, what=f"a {kind!r} report")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout_s: float = 60) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        return rc

    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish(timeout_s=10)


def proc_starter() -> Iterator[Callable[..., TrainProc]]:
    """Body of each module's ``procs`` fixture: start training processes; any still running at
    the end of the test is killed (by its pid)."""
    started: list[TrainProc] = []

    def start(args: list[str], **env: str) -> TrainProc:
        started.append(TrainProc(args, **env))
        return started[-1]

    yield start
    for p in started:
        p.kill()


@pytest.fixture
def procs() -> Iterator[Callable[..., TrainProc]]:
    yield from proc_starter()


def test_one_worker_trains_reports_and_checkpoints(procs: Callable[..., TrainProc], tmp_path: Path) -> None:
    run = procs(
        [*TINY, "--steps", "40", "--log-every", "5"],
        RUNNER_CHECKPOINT_URI=f"file://{tmp_path}/ckpt",
        RUNNER_CHECKPOINT_EVERY="10",
    )
    assert run.finish() == 0, run.output()
    progress = run.reports("progress")
    assert [p["step"] for p in progress] == [1, 5, 10, 15, 20, 25, 30, 35, 40]
    for p in progress:
        assert PROGRESS_KEYS <= set(p), p
        assert p["total_steps"] == 40 and p["steps_per_s"] > 0 and p["tokens_per_s"] > 0 and p["epoch"] > 0
    result = run.reports("result")[-1]
    assert result["first_loss"] > 5.0  # ln(256) = 5.55: an untrained byte model
    assert result["final_loss"] < result["first_loss"] - 1.5, result
    assert 0 < result["val_loss"] < 4.5, result
    checkpoints = run.reports("checkpoint")
    assert [c["step"] for c in checkpoints] == [10, 20, 30, 40]
    assert checkpoints[-1]["uri"] == f"file://{tmp_path}/ckpt/step-00000040" == result["checkpoint"]
    kept = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert kept == ["latest.json", "step-00000020", "step-00000030", "step-00000040"]  # keep 3
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text())["step"] == 40


def test_two_gloo_workers_train_and_loss_falls(procs: Callable[..., TrainProc], tmp_path: Path) -> None:
    env = dict(
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        RUNNER_CHECKPOINT_URI=f"file://{tmp_path}/ckpt",
        RUNNER_CHECKPOINT_EVERY="20",
    )
    args = [*TINY, "--steps", "40", "--log-every", "10"]
    rank0 = procs(args, RANK="0", LOCAL_RANK="0", **env)
    rank1 = procs(args, RANK="1", LOCAL_RANK="0", **env)
    assert rank0.finish(timeout_s=90) == 0, rank0.output()
    assert rank1.finish(timeout_s=30) == 0, rank1.output()
    result = rank0.reports("result")[-1]
    assert result["world_size"] == 2
    assert result["final_loss"] < result["first_loss"] - 1.5, result
    assert result["tokens_per_s"] == pytest.approx(result["steps_per_s"] * 8 * 32 * 2, rel=0.01)
    assert [c["step"] for c in rank0.reports("checkpoint")] == [20, 40]
    assert not [line for line in rank1.lines if line.startswith("{")], "only rank 0 reports"
    assert "world size 2 (gloo)" in rank1.output()


def test_sigterm_to_one_worker_stops_the_gang_at_one_step(procs: Callable[..., TrainProc], tmp_path: Path) -> None:
    """A preemption notice may reach any container of the gang: all ranks vote each step, so
    they stop together, rank 0 saves that step, and every rank exits 143."""
    env = dict(
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        RUNNER_CHECKPOINT_URI=f"file://{tmp_path}/ckpt",
    )
    args = [*TINY, "--steps", "5000", "--log-every", "1"]
    rank0 = procs(args, RANK="0", **env)
    rank1 = procs(args, RANK="1", **env)
    rank0.wait_report("progress", lambda p: p["step"] >= 10)
    rank1.signal(signal.SIGTERM)
    assert rank1.finish() == 143, rank1.output()
    assert rank0.finish() == 143, rank0.output()
    last = rank0.reports("progress")[-1]["step"]
    assert rank0.reports("checkpoint")[-1] == {**rank0.reports("checkpoint")[-1], "step": last, "reason": "sigterm"}
    assert f"stopped by a stop signal on another rank at step {last}" in rank0.output()
    assert f"stopped by SIGTERM at step {last}" in rank1.output()


def test_flags_override_env_and_bad_values_name_their_source(tmp_path: Path) -> None:
    cfg = load_config(
        ["--steps", "7"],
        {
            "TRAIN_STEPS": "99",
            "TRAIN_LR": "0.01",
            "RUNNER_CHECKPOINT_EVERY": "5",
            "RUNNER_CHECKPOINT_URI": "s3://b/w-1",
            "WORLD_SIZE": "4",
            "RANK": "3",
        },
    )
    assert (cfg.steps, cfg.lr, cfg.checkpoint_every, cfg.checkpoint_uri) == (7, 0.01, 5, "s3://b/w-1")
    assert (cfg.dist.world_size, cfg.dist.rank, cfg.dist.master_addr) == (4, 3, "127.0.0.1")
    assert load_config([], {}).checkpoint_uri == f"file://{Path.cwd()}/checkpoints"
    for argv, env, message in [
        ([], {"TRAIN_STEPS": "lots"}, "TRAIN_STEPS='lots' .*--steps"),
        ([], {"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2: must be in 0..1"),
        ([], {"MASTER_PORT": "70000"}, "MASTER_PORT=70000"),
        (["--n-heads", "3"], {}, "--n-heads=3 must divide --d-model=128"),
        (["--checkpoint-every", "0"], {}, "--checkpoint-every=0: must be >= 1"),
        ([], {"RUNNER_CHECKPOINT_URI": "/plain/path"}, "RUNNER_CHECKPOINT_URI='/plain/path'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(argv, env)


def test_bad_env_exits_2_with_one_line(procs: Callable[..., TrainProc]) -> None:
    run = procs([], TRAIN_BATCH_SIZE="-3")
    assert run.finish() == 2
    assert run.output().strip() == "training: --batch-size=-3: must be >= 1"


def test_sigterm_before_any_report_still_exits_cleanly(procs: Callable[..., TrainProc], tmp_path: Path) -> None:
    """A stop notice during start-up is honoured at the first step: checkpoint, exit 143."""
    run = procs([*TINY, "--steps", "5000", "--log-every", "1000"], RUNNER_CHECKPOINT_URI=f"file://{tmp_path}/c")
    wait_for(lambda: any("parameters" in line for line in run.lines), timeout_s=60, what="the start-up line")
    run.signal(signal.SIGTERM)
    assert run.finish() == 143, run.output()
    saved = run.reports("checkpoint")[-1]
    assert saved["reason"] == "sigterm" and saved["step"] == run.reports("progress")[-1]["step"]
    assert not math.isnan(run.reports("progress")[-1]["loss"])
