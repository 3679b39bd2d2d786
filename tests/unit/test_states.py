"""The workload state machine: what may follow what."""

from __future__ import annotations

import pytest

from runner.states import ReplicaState, WorkloadState

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
    assert {s for s in ReplicaState if s.is_terminal()} == {ReplicaState.EXITED, ReplicaState.STOPPED, ReplicaState.LOST}
