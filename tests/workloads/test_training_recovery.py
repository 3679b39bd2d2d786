"""Crash and preemption: SIGKILL resumes within one interval, SIGTERM checkpoints the current
step and the resumed run follows the uninterrupted trajectory, damaged or half-written
checkpoints are skipped, retention keeps the newest K."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.workloads.test_training import TINY, TrainProc, proc_starter
from workloads.common.artifacts import fetch_verified, open_store, publish
from workloads.training.checkpoint import Checkpoints, step_prefix

EVERY = 10
LONG = [*TINY, "--steps", "1000", "--log-every", "1"]  # long enough to be stopped mid-way


@pytest.fixture
def procs() -> Iterator[Callable[..., TrainProc]]:
    yield from proc_starter()


def losses(run: TrainProc) -> dict[int, float]:
    return {p["step"]: p["loss"] for p in run.reports("progress")}


def test_sigkill_mid_run_resumes_within_one_interval(procs: Callable[..., TrainProc], tmp_path: Path) -> None:
    env = dict(RUNNER_CHECKPOINT_URI=f"file://{tmp_path}/ckpt", RUNNER_CHECKPOINT_EVERY=str(EVERY))
    first = procs(LONG, **env)
    first.wait_report("checkpoint", lambda c: c["step"] >= 2 * EVERY)
    first.signal(signal.SIGKILL)
    assert first.finish() == -signal.SIGKILL
    last_step = max(losses(first))  # every step is reported: the last one done before the kill
    second = procs(LONG, **env)
    resumed = second.wait_report("resume")["step"]
    assert 0 < resumed <= last_step and resumed % EVERY == 0
    assert last_step - resumed <= EVERY, f"went back {last_step - resumed} steps (interval {EVERY})"
    assert second.wait_report("progress")["step"] == resumed + 1  # it trains on from there
    second.signal(signal.SIGTERM)
    assert second.finish() == 143, second.output()


def test_sigterm_checkpoints_now_and_resume_follows_the_same_trajectory(
    procs: Callable[..., TrainProc], tmp_path: Path
) -> None:
    """Run B is stopped by SIGTERM and resumed; run A is never interrupted. Same seed, same
    world size: every step's loss in B (before and after the resume) equals A's."""
    env_b = dict(RUNNER_CHECKPOINT_URI=f"file://{tmp_path}/b", RUNNER_CHECKPOINT_EVERY=str(EVERY))
    b1 = procs(LONG, **env_b)
    b1.wait_report("progress", lambda p: p["step"] >= 15)
    b1.signal(signal.SIGTERM)
    assert b1.finish() == 143, b1.output()
    stopped_at = max(losses(b1))
    saved = b1.reports("checkpoint")[-1]
    assert saved == {**saved, "step": stopped_at, "reason": "sigterm"}, "the checkpoint is of the current step"
    assert saved["uri"].endswith(step_prefix(stopped_at))

    b2 = procs(LONG, **env_b)
    assert b2.wait_report("resume")["step"] == stopped_at
    b2.wait_report("progress", lambda p: p["step"] >= stopped_at + 25)
    b2.signal(signal.SIGTERM)
    assert b2.finish() == 143, b2.output()
    after = losses(b2)
    assert min(after) == stopped_at + 1

    a = procs(LONG, RUNNER_CHECKPOINT_URI=f"file://{tmp_path}/a", RUNNER_CHECKPOINT_EVERY=str(EVERY))
    a.wait_report("progress", lambda p: p["step"] >= max(after))
    a.signal(signal.SIGTERM)
    a.finish()
    reference = losses(a)
    for step, loss in {**losses(b1), **after}.items():
        assert loss == pytest.approx(reference[step], abs=1e-5), f"step {step}: {loss}, uninterrupted {reference[step]}"


def test_corrupt_and_partial_checkpoints_are_skipped(procs: Callable[..., TrainProc], tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    env = dict(RUNNER_CHECKPOINT_URI=f"file://{root}", RUNNER_CHECKPOINT_EVERY=str(EVERY))
    assert procs([*TINY, "--steps", "30"], **env).finish() == 0
    # Newest complete checkpoint: flip bytes in the middle of its weights (size unchanged).
    model = root / step_prefix(30) / "model.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 8])
    model.write_bytes(bytes(data))
    # A newer one that a crash interrupted: files but no manifest, and a temp file left behind.
    partial = root / step_prefix(40)
    partial.mkdir()
    (partial / "model.pt").write_bytes(bytes(data[:1000]))
    (partial / ".trainer.pt.tmp-0123456789ab").write_bytes(b"half")

    run = procs([*TINY, "--steps", "50"], **env)
    assert run.finish() == 0, run.output()
    out = run.output()
    assert f"skipping checkpoint file://{root}/step-00000040: no manifest" in out
    bad = f"file://{root}/step-00000030"
    assert f"skipping checkpoint {bad}: {bad}/model.pt fails its checksum" in out
    assert run.reports("resume")[0]["step"] == 20
    assert [c["step"] for c in run.reports("checkpoint")] == [30, 40, 50]
    store = open_store(f"file://{root}")
    for step in (30, 40, 50):  # re-saved over the bad ones: all verify now
        fetch_verified(store, step_prefix(step))
    assert sorted(Checkpoints(store).steps()) == [30, 40, 50]


def test_checkpoint_of_another_model_is_refused(procs: Callable[..., TrainProc], tmp_path: Path) -> None:
    env = dict(RUNNER_CHECKPOINT_URI=f"file://{tmp_path}/ckpt")
    assert procs([*TINY, "--steps", "3"], **env).finish() == 0
    other = procs([*TINY, "--steps", "3", "--d-model", "32"], **env)
    assert other.finish() == 2
    assert "is of model" in other.output()
    assert "use the same model flags or another RUNNER_CHECKPOINT_URI" in other.output()


def test_prune_keeps_newest_complete_and_load_skips_partial(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    logged: list[str] = []
    cps = Checkpoints(store, keep=2, log=logged.append)
    publish(store, step_prefix(5), {"model.pt": b"five", "trainer.pt": b"5"})
    store.put_bytes(f"{step_prefix(7)}/model.pt", b"partial, older than what is kept")
    cps.save(10, {"model.pt": b"ten", "trainer.pt": b"10"}, {})
    assert sorted(cps.steps()) == [5, 7, 10]  # two complete: nothing pruned yet
    store.put_bytes(f"{step_prefix(30)}/model.pt", b"partial, newest")
    cps.save(20, {"model.pt": b"twenty", "trainer.pt": b"20"}, {})
    assert cps.steps() == {10: True, 20: True, 30: False}  # 5 and 7 are older than the oldest kept
    loaded = cps.load_latest()
    assert loaded is not None and loaded.step == 20 and loaded.files["model.pt"] == b"twenty"
    assert logged == [f"skipping checkpoint {store.uri}/step-00000030: no manifest (interrupted while being written)"]
    assert Checkpoints(open_store(f"file://{tmp_path}/empty")).load_latest() is None
