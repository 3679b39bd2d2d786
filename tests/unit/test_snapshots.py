"""Attack: swap a symlink into a read-only mount's path between its check and its bind (issue 15,
point 2). The snapshot a read-only mount is bound from is made by file descriptors: a symlink
anywhere is never followed, however it is timed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from runner.core.errors import UserError
from runner.runtime.snapshots import SNAPSHOTS, drop_snapshot, snapshot


def checkpoint(root: Path) -> Path:
    step = root / "acme" / "w-train" / "step-00000040"
    step.mkdir(parents=True)
    (step / "model.pt").write_bytes(b"weights")
    (step / "manifest.json").write_text("{}")
    (step / "sub").mkdir()
    (step / "sub" / "tokenizer.json").write_text("tok")
    return step


def test_a_snapshot_holds_the_folders_regular_files_by_hard_link_and_nothing_else(tmp_path: Path) -> None:
    step = checkpoint(tmp_path)
    (step / "passwd").symlink_to("/etc/passwd")  # left by the training job's container
    (step / "host").symlink_to("/")
    os.mkfifo(step / "pipe")
    snap = snapshot(step, tmp_path, "w-svc-r0-a1")
    assert snap == tmp_path / SNAPSHOTS / "w-svc-r0-a1"
    found = sorted(str(p.relative_to(snap)) for p in snap.rglob("*"))
    assert found == ["manifest.json", "model.pt", "sub", "sub/tokenizer.json"]
    assert (snap / "model.pt").stat().st_ino == (step / "model.pt").stat().st_ino  # no copy
    drop_snapshot(tmp_path, "w-svc-r0-a1")
    assert not snap.exists() and (step / "model.pt").read_bytes() == b"weights"  # the files stay


@pytest.mark.parametrize("swapped", ["acme", "acme/w-train", "acme/w-train/step-00000040"])
def test_a_symlink_on_the_way_is_refused_not_followed(tmp_path: Path, swapped: str) -> None:
    step = checkpoint(tmp_path)
    moved = tmp_path / "moved"
    (tmp_path / swapped).rename(moved)
    (tmp_path / swapped).symlink_to(moved if swapped != "acme/w-train/step-00000040" else "/")
    with pytest.raises(UserError, match="is not a folder"):
        snapshot(step, tmp_path, "k")


def test_swapping_the_folder_for_a_symlink_to_the_root_while_snapshots_are_made_never_reaches_it(
    tmp_path: Path,
) -> None:
    step = checkpoint(tmp_path)
    real = tmp_path / "acme" / "w-train" / "real"
    step.rename(real)
    stop = threading.Event()

    def swapper() -> None:  # what the training job's container does, as fast as it can
        while not stop.is_set():
            step.symlink_to("/")
            step.unlink()
            real.rename(step)
            step.rename(real)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    outcomes = {"refused": 0, "snapshot": 0}
    try:
        for i in range(300):
            try:
                snap = snapshot(step, tmp_path, f"k{i}")
            except (UserError, FileNotFoundError):
                outcomes["refused"] += 1
                continue
            outcomes["snapshot"] += 1
            names = {p.name for p in snap.iterdir()}
            assert names <= {"model.pt", "manifest.json", "sub"}, names  # never the machine's root
            drop_snapshot(tmp_path, f"k{i}")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert sum(outcomes.values()) == 300
