"""``python -m bench.training`` as documented must measure what its BENCH line reports: the runner
and the bare script side by side (and the recovery time), not the bare half alone with
``ratio=nan``. These tests read the argument parser and the plan ``main`` follows; no cluster."""

from __future__ import annotations

import pytest

from bench.training import halves, parse_args


def test_the_default_run_measures_both_halves_and_recovery() -> None:
    assert halves(parse_args([])) == ("runner", "bare", "recovery")
    assert halves(parse_args(["--runs", "5", "--steps", "600"])) == ("runner", "bare", "recovery")


def test_old_runner_flag_still_means_the_default() -> None:
    assert halves(parse_args(["--runner"])) == halves(parse_args([]))


def test_bare_only_is_an_explicit_choice() -> None:
    assert halves(parse_args(["--bare-only"])) == ("bare",)
    with pytest.raises(SystemExit):  # asking for both and neither at once is an error, not a guess
        parse_args(["--runner", "--bare-only"])
