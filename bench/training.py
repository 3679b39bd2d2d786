"""Training throughput: the same DDP run bare (N worker processes) and through runner, plus the
recovery time after a killed node.

What is measured, per run: ``steps_per_s`` of rank 0's ``{"runner": "result"}`` line, i.e. the
trainer's own steady-state rate (steps after the first one, over the time they took, checkpoint
writes included). Both halves read the same line, so the ratio compares like with like: the
cost of containers, placement and networking on a training step, not start-up time. The wall
time of each run (start-up included) is printed too.

Bare half: ``--workers`` processes of ``python -m workloads.training`` on this machine,
``WORLD_SIZE``/``RANK``/``MASTER_ADDR=127.0.0.1``/a free ``MASTER_PORT`` (gloo on loopback),
one torch thread each, checkpoints to a temporary ``file://`` folder every
``--checkpoint-every`` steps.

Runner half (run by default beside the bare one; ``--bare-only`` skips it;
``bench/training_runner.py``): a private CPU-mode cluster (Docker runtime, the default 4 nodes,
ports ``--ray-port``/``--server-port``); each round submits the same run as a ``kind:
training`` workload (``workers: N``, one CPU each, the same flags) and reads rank 0's result
line from the stored logs; then a recovery run: a long job whose rank-1
node is killed (all its processes and containers at once, as a machine losing power) after the
first checkpoint; ``recovery_s`` is from the kill to the first progress report above the step
the new attempt resumed from (the report's arrival at the control plane), with the phases
printed. Rounds interleave runner, bare and recovery, so noise on the machine hits all alike.
Run it from the repository root::

    .venv/bin/python -m bench.training                       # both halves + recovery, 3 rounds
    .venv/bin/python -m bench.training --workers 2 --steps 600 --runs 5
    .venv/bin/python -m bench.training --bare-only           # the bare half alone, no cluster (ratio=nan)

What TLS costs (issue 14): ``RUNNER_TLS=0`` runs the runner half's cluster without it (for this
measurement only); compare its ratio with the default run's. The last line is (``nan`` only for
what ``--bare-only`` left out)::

    BENCH training runner_steps_per_s=<n> bare_steps_per_s=<n> ratio=<runner/bare> recovery_s=<n> tls=on

Targets (issue 5): runner throughput >= 90% of bare; recovery <= 30 s in CPU mode.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.settings import Settings
from workloads.common.report import parse_report

REPO = Path(__file__).resolve().parent.parent

#: Environment a bare worker must not inherit from the shell (the bench sets them).
DIST_VARS = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "RUNNER_CHECKPOINT_URI",
    "RUNNER_CHECKPOINT_EVERY",
)


@dataclass
class Measurement:
    """One run of the training job, however it was started."""

    steps_per_s: float
    tokens_per_s: float
    wall_s: float
    final_loss: float
    recovery_s: float = math.nan  # runner half only: node killed -> training progressing again


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_args(args: argparse.Namespace) -> list[str]:
    """The trainer's flags, identical for both halves."""
    return [
        "--steps",
        str(args.steps),
        "--log-every",
        str(args.log_every),
        "--threads",
        "1",
        *(["--d-model", str(args.d_model)] if args.d_model else []),
        *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
    ]


# -- bare --------------------------------------------------------------------------------------------------
def run_bare(args: argparse.Namespace, workdir: Path) -> Measurement:
    """``--workers`` trainer processes on this machine, rendezvous on 127.0.0.1."""
    ckpt = Path(tempfile.mkdtemp(prefix="ckpt-", dir=workdir))
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in DIST_VARS and not k.startswith("TRAIN_")}
    procs = []
    t0 = time.perf_counter()
    for rank in range(args.workers):
        env = {
            **base,
            "WORLD_SIZE": str(args.workers),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RUNNER_CHECKPOINT_URI": f"file://{ckpt}",
            "RUNNER_CHECKPOINT_EVERY": str(args.checkpoint_every),
            "PYTHONUNBUFFERED": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "workloads.training", *train_args(args)],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE if rank == 0 else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        out, _ = procs[0].communicate(timeout=args.timeout)
        codes = [procs[0].returncode] + [p.wait(timeout=60) for p in procs[1:]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(ckpt, ignore_errors=True)
    wall = time.perf_counter() - t0
    if codes[0] != 0:
        raise RuntimeError(f"bare run failed (exit codes {codes}); rank 0 said:\n{out[-3000:]}")
    if any(codes):  # seen once in ~40 runs: a rank aborting in gloo's teardown after rank 0's result
        print(f"warning: bare run: rank exit codes {codes} after rank 0 finished; its result is kept", flush=True)
    return measurement_from_logs(out.splitlines(), wall)


def measurement_from_logs(lines: Sequence[str], wall_s: float) -> Measurement:
    """The figures of rank 0's result line (the same parse serves the runner half's logs)."""
    results = [r for r in map(parse_report, lines) if r and r["runner"] == "result"]
    if not results:
        raise RuntimeError('no {"runner": "result"} line in rank 0\'s output: the run did not finish')
    r = results[-1]
    return Measurement(
        steps_per_s=float(r["steps_per_s"]),
        tokens_per_s=float(r["tokens_per_s"]),
        wall_s=wall_s,
        final_loss=float(r["final_loss"]),
    )


# -- main ----------------------------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3f}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2, help="DDP workers (default 2)")
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--runs", type=int, default=3, help="measured runs of each half (default 3)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--log-every", type=int, default=25, help="steps between progress reports (default 25)")
    p.add_argument("--d-model", type=int, default=0, help="model width (default: the trainer's)")
    p.add_argument("--batch-size", type=int, default=0, help="per-worker batch (default: the trainer's)")
    only = p.add_mutually_exclusive_group()
    only.add_argument(
        "--bare-only",
        action="store_true",
        help="skip the runner half and the recovery runs (no cluster, no Docker; ratio=nan)",
    )
    # The runner half used to be opt-in; old command lines that ask for it still mean the default.
    only.add_argument("--runner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=1, help="unmeasured bare runs first (default 1)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one run may take (default 600)")
    from bench.training_runner import add_arguments

    add_arguments(p)
    return p.parse_args(argv)


def halves(args: argparse.Namespace) -> tuple[str, ...]:
    """What a run measures. The BENCH line's point is the ratio runner/bare (and the recovery
    time), so a plain ``python -m bench.training`` runs both halves side by side; only an explicit
    ``--bare-only`` measures the bare script alone."""
    return ("bare",) if args.bare_only else ("runner", "bare", "recovery")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    measured = halves(args)
    if args.workers < 1 or args.runs < 1 or args.steps < 2:
        raise SystemExit("--workers and --runs must be >= 1, --steps >= 2")
    workdir = Path(tempfile.mkdtemp(prefix="bench-training-"))
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    say(
        f"bench training: {args.workers} workers, {args.steps} steps, {args.runs} runs, "
        f"{os.cpu_count()} CPUs on this machine, load average {os.getloadavg()[0]:.2f}; "
        f"measuring {' + '.join(measured)}; flags: {' '.join(train_args(args))}"
    )
    bare: list[Measurement] = []
    runner: list[Measurement] = []
    half = None
    ok = False
    try:
        for _ in range(args.warmup):
            run_bare(args, workdir)
        if "runner" in measured:
            from bench.training_runner import RunnerHalf

            half = RunnerHalf(args, say=say)
            half.start()
        for i in range(args.runs):  # interleaved, so noise on the machine hits both halves alike
            if half is not None:
                runner.append(half.throughput())
            bare.append(run_bare(args, workdir))
            b = bare[-1]
            line = (
                f"run {i + 1}/{args.runs}: bare {b.steps_per_s:.2f} steps/s ({b.tokens_per_s:.0f} tokens/s, "
                f"wall {b.wall_s:.1f}s, final loss {b.final_loss:.3f})"
            )
            if half is not None:
                r = runner[-1]
                r.recovery_s, phases = half.recovery()
                line += (
                    f" | runner {r.steps_per_s:.2f} steps/s (wall {r.wall_s:.1f}s, final loss "
                    f"{r.final_loss:.3f}) | recovery {fmt(r.recovery_s)}s = "
                    + " + ".join(f"{name} {value:.1f}" for name, value in phases.items())
                )
            say(line)
        ok = True
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if half is not None:
            half.close(ok)
    bare_sps = median([m.steps_per_s for m in bare])
    runner_sps = median([m.steps_per_s for m in runner])
    recovery = median([m.recovery_s for m in runner])
    ratio = runner_sps / bare_sps if runner else math.nan
    say("")
    say(
        f"bare:   median {fmt(bare_sps)} steps/s over {len(bare)} runs (min {fmt(min(m.steps_per_s for m in bare))}, "
        f"max {fmt(max(m.steps_per_s for m in bare))}); wall median {fmt(median([m.wall_s for m in bare]))}s"
    )
    if runner:
        verdict = "PASS" if ratio >= 0.9 else "MISS"
        say(
            f"runner: median {fmt(runner_sps)} steps/s over {len(runner)} runs (min "
            f"{fmt(min(m.steps_per_s for m in runner))}, max {fmt(max(m.steps_per_s for m in runner))}); wall median "
            f"{fmt(median([m.wall_s for m in runner]))}s; ratio runner/bare {ratio:.2f} (target >= 0.90: {verdict})"
        )
        paired = [r.steps_per_s / b.steps_per_s for r, b in zip(runner, bare)]
        say(
            f"per-round ratios (each runner run against the bare run beside it): "
            f"{', '.join(f'{x:.2f}' for x in paired)}; median {fmt(median(paired))}"
        )
        say(
            f"recovery: median {fmt(recovery)}s over {len(runner)} kills (max "
            f"{fmt(max(m.recovery_s for m in runner))}s; target <= 30: {'PASS' if recovery <= 30 else 'MISS'})"
        )
    else:
        say("runner: not measured (--bare-only); drop it for the ratio and the recovery time")
    say(
        f"BENCH training runner_steps_per_s={fmt(runner_sps)} bare_steps_per_s={fmt(bare_sps)} "
        f"ratio={fmt(ratio)} recovery_s={fmt(recovery)} tls={'on' if Settings.from_env().tls else 'off'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
