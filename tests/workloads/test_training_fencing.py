"""Checkpoint fencing: when the runner replaces a gang whose node was cut off (not dead), the
old gang may still be training on the same checkpoints. The new attempt's claim stops the old
one's saves, so it can neither race the new gang's saves nor prune its checkpoints."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.workloads.test_training import TINY, TrainProc, proc_starter
from workloads.common.artifacts import MANIFEST, FileStore, open_store, read_manifest
from workloads.training.checkpoint import FENCE, LATEST, Checkpoints, SupersededError, step_prefix

FILES = {"model.pt": b"weights", "trainer.pt": b"state"}


@pytest.fixture
def procs() -> Iterator[Callable[..., TrainProc]]:
    yield from proc_starter()


def test_a_newer_attempts_claim_stops_the_older_attempts_saves(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    old, new = Checkpoints(store, attempt=1), Checkpoints(store, attempt=2)
    old.claim()
    old.save(10, FILES, {})
    new.claim()
    assert json.loads(store.get_bytes(FENCE))["attempt"] == 2
    with pytest.raises(SupersededError, match="attempt 2 of this run has taken over"):
        old.save(20, FILES, {})
    assert sorted(old.steps()) == [10]  # nothing of step 20 was written
    new.save(20, FILES, {})
    assert json.loads(store.get_bytes(LATEST))["step"] == 20
    assert read_manifest(store, step_prefix(20)).meta["attempt"] == 2
    with pytest.raises(SupersededError):
        old.claim()  # an older attempt coming back cannot take the checkpoints again
    Checkpoints(store).save(30, FILES, {})  # attempt 0 (a run outside the runner) is never fenced


class TakenOverWhilePublishing(FileStore):
    """A store where a newer attempt claims the folder while a manifest is being written."""

    def put_bytes(self, key: str, data: bytes) -> str:
        uri = super().put_bytes(key, data)
        if key.endswith(MANIFEST):
            super().put_bytes(FENCE, json.dumps({"attempt": 9}).encode())
        return uri


def test_a_takeover_during_a_save_leaves_the_pointer_and_the_pruning_to_the_new_attempt(tmp_path: Path) -> None:
    plain = open_store(f"file://{tmp_path}")
    keep_one = Checkpoints(plain, keep=1, attempt=3)
    keep_one.save(10, FILES, {})
    racing = Checkpoints(TakenOverWhilePublishing(f"file://{tmp_path}", tmp_path), keep=1, attempt=3)
    with pytest.raises(SupersededError):
        racing.save(20, FILES, {})
    assert json.loads(plain.get_bytes(LATEST))["step"] == 10  # the pointer did not move
    assert racing.steps() == {10: True, 20: True}  # step 10 was not pruned; 20 is complete and valid


def test_a_running_older_attempt_stops_when_the_next_attempt_claims(
    procs: Callable[..., TrainProc], tmp_path: Path
) -> None:
    env: dict[str, Any] = dict(RUNNER_CHECKPOINT_URI=f"file://{tmp_path}/ckpt", RUNNER_CHECKPOINT_EVERY="5")
    args = [*TINY, "--steps", "100000", "--log-every", "1"]
    old = procs(args, RUNNER_ATTEMPT="1", **env)
    old.wait_report("checkpoint", lambda c: c["step"] >= 10)
    new = procs(args, RUNNER_ATTEMPT="2", **env)  # the runner's next attempt, old node still running
    assert old.finish(timeout_s=120) == 1
    assert "attempt 2 of this run has taken over the checkpoints" in old.output()
    assert "attempt 1 stops without saving" in old.output()
    resumed = new.wait_report("resume")["step"]
    saved = new.wait_report("checkpoint", lambda c: c["step"] > resumed)["step"]
    store = open_store(f"file://{tmp_path}/ckpt")
    assert read_manifest(store, step_prefix(saved)).meta["attempt"] == 2
    new.signal(signal.SIGTERM)
    assert new.finish() == 143, new.output()
    latest = json.loads(store.get_bytes(LATEST))["step"]
    assert read_manifest(store, step_prefix(latest)).meta["attempt"] == 2
