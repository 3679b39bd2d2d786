"""The workload state machine: what may follow what."""

from __future__ import annotations

import pytest

from runner.core.states import ReplicaState, WorkloadState

S = WorkloadState


def test_happy_path_is_allowed() -> None:
    path = [S.PENDING, S.PLACED, S.STARTING, S.RUNNING, S.SUCCEEDED]
    for current, target in zip(path, path[1:], strict=False):
        assert current.can_move_to(target), f"{current} -> {target}"


def test_retry_loop_goes_back_to_pending() -> None:
    assert S.RUNNING.can_move_to(S.RETRYING)
    assert S.RETRYING.can_move_to(S.PENDING)
    assert not S.RETRYING.can_move_to(S.RUNNING)


@pytest.mark.parametrize("state", [s for s in S if not s.is_terminal()])
def test_every_live_state_can_be_cancelled(state: WorkloadState) -> None:
    assert state.can_move_to(S.CANCELLED)


@pytest.mark.parametrize("state", [S.SUCCEEDED, S.FAILED, S.CANCELLED])
def test_terminal_states_are_final(state: WorkloadState) -> None:
    assert state.is_terminal()
    assert not any(state.can_move_to(target) for target in S)


def test_no_skipping_placement() -> None:
    assert not S.PENDING.can_move_to(S.RUNNING)
    assert not S.PENDING.can_move_to(S.SUCCEEDED)


def test_replica_terminal_states() -> None:
    assert {s for s in ReplicaState if s.is_terminal()} == {
        ReplicaState.EXITED,
        ReplicaState.STOPPED,
        ReplicaState.LOST,
    }


R = ReplicaState


def test_a_replica_may_pull_its_image_before_it_runs() -> None:
    for path in (
        [R.STARTING, R.RUNNING, R.EXITED],
        [R.STARTING, R.PULLING, R.RUNNING, R.STOPPED],
        [R.STARTING, R.PULLING, R.STARTING, R.RUNNING],
    ):
        for current, target in zip(path, path[1:], strict=False):
            assert current.can_move_to(target), f"{current} -> {target}"


@pytest.mark.parametrize("end", [R.EXITED, R.STOPPED, R.LOST])
def test_a_pull_can_end_without_the_replica_ever_running(end: ReplicaState) -> None:
    assert R.PULLING.can_move_to(end)  # image missing, cancelled while pulling, node gone


def test_a_running_replica_never_goes_back_to_pulling_or_starting() -> None:
    """A progress answer that arrives after the start's must not undo it."""
    assert not R.RUNNING.can_move_to(R.PULLING)
    assert not R.RUNNING.can_move_to(R.STARTING)


@pytest.mark.parametrize("state", [R.EXITED, R.STOPPED, R.LOST])
def test_replica_ends_are_final(state: ReplicaState) -> None:
    assert not any(state.can_move_to(target) for target in R)


def test_only_starting_and_pulling_are_before_the_start() -> None:
    assert {s for s in R if s.is_before_start()} == {R.STARTING, R.PULLING}
