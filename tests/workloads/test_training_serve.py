"""Serving a trained checkpoint: what the inference workload calls for /v1/completions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.workloads.test_training import REPO, TINY, TrainProc
from workloads.common.artifacts import ArtifactCorruptError, open_store
from workloads.training.checkpoint import step_prefix
from workloads.training.serve import CheckpointNotFoundError, generate, load_for_inference


@pytest.fixture(scope="module")
def run_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished 60-step run (checkpoints at 30 and 60)."""
    uri = f"file://{tmp_path_factory.mktemp('serve')}/w-serve"
    run = TrainProc([*TINY, "--steps", "60", "--checkpoint-every", "30"], RUNNER_CHECKPOINT_URI=uri)
    assert run.finish(timeout_s=120) == 0, run.output()
    return uri


def test_loads_the_newest_checkpoint_or_a_named_one(run_uri: str) -> None:
    newest = load_for_inference(run_uri)
    assert (newest.step, newest.checkpoint_uri) == (60, f"{run_uri}/step-00000060")
    assert not newest.training and newest.config.seq_len == 32
    older = load_for_inference(f"{run_uri}/{step_prefix(30)}")
    assert older.step == 30
    assert any(not (a == b).all() for a, b in zip(newest.parameters(), older.parameters(), strict=True))


def test_generate_greedy_is_deterministic_and_sampling_is_seeded(run_uri: str) -> None:
    model = load_for_inference(run_uri)
    greedy = generate(model, "def ", max_tokens=40, temperature=0)
    assert greedy == generate(model, "def ", max_tokens=40, temperature=0)
    assert 0 < len(greedy.encode("utf-8", errors="surrogatepass")) <= 40 * 3  # 40 bytes; replacements widen
    a = generate(model, "import ", max_tokens=30, temperature=1.0, seed=7)
    assert a == generate(model, "import ", max_tokens=30, temperature=1.0, seed=7)
    assert generate(model, "x", max_tokens=0) == ""
    long_prompt = "y = 1\n" * 50  # longer than the context (32): cropped, not an error
    assert isinstance(generate(model, long_prompt, max_tokens=5, temperature=0.5, top_k=10), str)


def test_generate_stops_at_a_stop_sequence(run_uri: str) -> None:
    model = load_for_inference(run_uri)
    full = generate(model, "def f(", max_tokens=60, temperature=0)
    stop = full[10:12]
    assert stop and generate(model, "def f(", max_tokens=60, temperature=0, stop=[stop]) == full[: full.find(stop)]


def test_generate_rejects_bad_arguments(run_uri: str) -> None:
    model = load_for_inference(run_uri)
    with pytest.raises(ValueError, match="max_tokens must be >= 0, got -1"):
        generate(model, "x", max_tokens=-1)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate(model, "x", temperature=-0.5)


def test_no_or_damaged_checkpoint_is_a_clear_error(run_uri: str, tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=f"no complete checkpoint under file://{tmp_path}"):
        load_for_inference(f"file://{tmp_path}")
    store = open_store(run_uri)
    good = store.get_bytes(f"{step_prefix(30)}/model.pt")
    store.put_bytes(f"{step_prefix(30)}/model.pt", good[:-1] + bytes([good[-1] ^ 1]))
    try:
        with pytest.raises(ArtifactCorruptError, match="fails its checksum"):
            load_for_inference(f"{run_uri}/{step_prefix(30)}")
    finally:
        store.put_bytes(f"{step_prefix(30)}/model.pt", good)


def test_serve_cli_completes_a_prompt(run_uri: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "workloads.training.serve", run_uri, "class ", "--max-tokens", "12", "--seed", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("class ")
