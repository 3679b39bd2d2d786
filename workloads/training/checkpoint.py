"""Checkpoints in an artifact store: layout, atomic save, verified load, retention.

Layout under RUNNER_CHECKPOINT_URI::

    step-00000100/model.pt        weights + model config (all a server needs)
    step-00000100/trainer.pt      optimizer, step, every rank's RNG states, data position, hyperparameters
    step-00000100/manifest.json   size + sha256 of both, written last: the commit point
    latest.json                   {"step", "prefix", "uri"} of the newest save, for people and tools
    fence.json                    {"attempt"}: the runner's attempt that writes here now

A save publishes the step folder (files, then manifest) and only then moves ``latest.json``
and prunes to the newest ``keep`` complete checkpoints. A load walks the step folders newest
first and takes the first whose manifest verifies, logging each one it skips (no manifest:
interrupted while written; checksum mismatch: damaged), so a half-written checkpoint is never
loaded and a damaged newest one costs one interval, not the run. ``latest.json`` is a hint
only: a crash between a manifest and the pointer must not hide a complete checkpoint.

Fencing: when a node is cut off rather than dead, its old gang may still be training while the
runner has started the next attempt elsewhere on the same checkpoints. Each attempt's rank 0
``claim``s the folder (``fence.json`` takes the highest attempt number) before it resumes, and a
save first checks the fence, again before it moves ``latest.json`` and prunes: a superseded
attempt stops with ``SupersededError`` instead of racing the new gang's saves and pruning its
checkpoints. (The check and the write are two requests, so an old writer can still finish the one
save it had begun; its step folder is then complete and valid, and the new gang's next save of a
higher step supersedes it.) A run outside the runner (attempt 0) claims nothing.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workloads.common.artifacts import (
    MANIFEST,
    ArtifactCorruptError,
    ArtifactNotFoundError,
    ArtifactStore,
    Manifest,
    fetch_verified,
    join,
    publish,
)

MODEL_FILE = "model.pt"
TRAINER_FILE = "trainer.pt"
LATEST = "latest.json"
FENCE = "fence.json"
FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d{8,})$")

Log = Callable[[str], None]


def step_prefix(step: int) -> str:
    return f"step-{step:08d}"


@dataclass(frozen=True)
class Loaded:
    """A verified checkpoint: its step, URI, manifest and the raw bytes of the files asked for."""

    step: int
    uri: str
    manifest: Manifest
    files: dict[str, bytes]


class SupersededError(Exception):
    """A newer attempt of this run has claimed its checkpoints: this one must not write them."""


class Checkpoints:
    """The checkpoints of one run under one store, written by one attempt (0: not fenced)."""

    def __init__(self, store: ArtifactStore, *, keep: int = 3, log: Log = print, attempt: int = 0) -> None:
        self.store = store
        self.keep = keep
        self.log = log
        self.attempt = attempt

    # -- fencing -------------------------------------------------------------------------------
    def holder(self) -> int:
        """The attempt that has claimed these checkpoints (0: none)."""
        try:
            return int(json.loads(self.store.get_bytes(FENCE)).get("attempt", 0))
        except ArtifactNotFoundError:
            return 0
        except (ValueError, TypeError, AttributeError):
            self.log(f"ignoring an unreadable {self.store.url(FENCE)}")
            return 0

    def claim(self) -> None:
        """Make this attempt the writer; SupersededError if a newer one already is."""
        if not self.attempt:
            return
        if self.check() < self.attempt:
            doc = {"attempt": self.attempt, "claimed_at": time.time()}
            self.store.put_bytes(FENCE, json.dumps(doc).encode())

    def check(self) -> int:
        """The holder (0 when not fenced); SupersededError if it is newer than this attempt."""
        holder = self.holder() if self.attempt else 0
        if holder > self.attempt:
            raise SupersededError(
                f"attempt {holder} of this run has taken over the checkpoints under {self.store.url('')}; "
                f"attempt {self.attempt} stops without saving (the runner replaced this gang, e.g. when its "
                "node was cut off)"
            )
        return holder

    def steps(self) -> dict[int, bool]:
        """Step -> whether its folder has a manifest, for every step folder in the store."""
        found: dict[int, bool] = {}
        for item in self.store.list():
            head, _, rest = item.key.partition("/")
            match = _STEP_DIR.match(head)
            if match and rest:
                step = int(match.group(1))
                found[step] = found.get(step, False) or rest == MANIFEST
        return found

    def save(self, step: int, files: dict[str, bytes], meta: dict[str, Any]) -> str:
        """Publish one checkpoint atomically, point ``latest.json`` at it, prune; return its URI."""
        self.check()
        prefix = step_prefix(step)
        # A re-save of a step (after a resume) must not pair the old manifest with new files.
        self.store.delete(join(prefix, MANIFEST))
        publish(self.store, prefix, files, meta={"format": FORMAT, "step": step, "attempt": self.attempt, **meta})
        uri = self.store.url(prefix)
        self.check()  # taken over while publishing: leave the pointer and the pruning to the new gang
        pointer = {"step": step, "prefix": prefix, "uri": uri, "created_at": time.time()}
        self.store.put_bytes(LATEST, json.dumps(pointer).encode())
        self.prune()
        return uri

    def prune(self) -> list[int]:
        """Keep the newest ``keep`` complete checkpoints; delete every step folder older than the
        oldest kept one (complete or not). Newer partial folders stay: the next save fixes them."""
        steps = self.steps()
        complete = sorted((s for s, ok in steps.items() if ok), reverse=True)
        if len(complete) <= self.keep:
            return []
        oldest_kept = complete[self.keep - 1]
        doomed = sorted(s for s in steps if s < oldest_kept)
        for step in doomed:
            self.store.delete_prefix(step_prefix(step))
        return doomed

    def load_latest(self, names: list[str] | None = None) -> Loaded | None:
        """The newest checkpoint that verifies (only ``names`` fetched, default all), or None."""
        for step, has_manifest in sorted(self.steps().items(), reverse=True):
            prefix = step_prefix(step)
            uri = self.store.url(prefix)
            if not has_manifest:
                self.log(f"skipping checkpoint {uri}: no manifest (interrupted while being written)")
                continue
            try:
                manifest, files = fetch_verified(self.store, prefix, names)
            except (ArtifactCorruptError, ArtifactNotFoundError) as exc:
                self.log(f"skipping checkpoint {uri}: {exc}")
                continue
            return Loaded(step=step, uri=uri, manifest=manifest, files=files)
        return None


# --------------------------------------------------------------------------- (de)serialisation


def to_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def from_bytes(data: bytes) -> Any:
    """``torch.load`` with ``weights_only``: a checkpoint is data, never code to run."""
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
