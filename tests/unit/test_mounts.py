"""Bind mounts a node prepares: only inside its artifact store, never through a symlink there."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import UserError
from runner.runtime.base import Mount, prepare_mounts


def test_a_missing_source_is_created(tmp_path: Path) -> None:
    source = tmp_path / "artifacts" / "local" / "w-1"
    prepare_mounts([Mount(source=str(source), target=str(source))], tmp_path / "artifacts")
    assert source.is_dir()


def test_a_source_outside_the_artifact_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="outside this node's artifact store"):
        prepare_mounts([Mount(source="/etc", target="/etc", read_only=True)], tmp_path)
    with pytest.raises(UserError, match="outside this node's artifact store"):
        prepare_mounts([Mount(source=f"{tmp_path}/../etc", target="/x")], tmp_path)


def test_a_source_through_a_symlink_in_the_store_is_refused(tmp_path: Path) -> None:
    """A container could leave a symlink in its own folder; a later mount must not follow it."""
    store = tmp_path / "artifacts"
    (store / "local").mkdir(parents=True)
    (store / "other").mkdir()
    (store / "local" / "evil").symlink_to("/etc")
    (store / "local" / "peek").symlink_to(store / "other")
    for source in (store / "local" / "evil", store / "local" / "evil" / "ssl", store / "local" / "peek"):
        with pytest.raises(UserError, match="symlink"):
            prepare_mounts([Mount(source=str(source), target="/ckpt", read_only=True)], store)


def test_a_symlink_above_the_store_is_fine(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "home").symlink_to(tmp_path / "disk")  # e.g. a home on another disk
    store = tmp_path / "home" / "artifacts"
    prepare_mounts([Mount(source=str(store / "local" / "w-1"), target="/ckpt")], store)
    assert (tmp_path / "disk" / "artifacts" / "local" / "w-1").is_dir()


def test_relative_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="absolute"):
        prepare_mounts([Mount(source="relative/dir", target="/ckpt")], tmp_path)
