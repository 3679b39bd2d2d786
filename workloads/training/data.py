"""The corpus (Python's own stdlib sources, present in every image) and each rank's batches.

Deterministic by construction, so that the same seed and world size give the same losses and a
resumed run continues the uninterrupted trajectory:

- files: the top-level ``*.py`` of ``sysconfig.get_paths()["stdlib"]``, sorted by name; every
  10th file (index % 10 == 9) is validation, the rest training, read until ``corpus_bytes``;
- shards: the training bytes are cut into ``world_size`` contiguous shards, rank r trains on r;
- order: a shard is cut into windows of ``seq_len + 1`` bytes; each epoch visits them in a
  permutation seeded by (seed, rank, epoch). The batch of step s is a pure function of s, so
  the data position in a checkpoint is just the step (no sampler state to save).
"""

from __future__ import annotations

import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

VAL_EVERY = 10


class CorpusError(RuntimeError):
    """The stdlib sources are missing or too small for the requested windows."""


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # uint8
    val: torch.Tensor  # uint8
    files: int


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def load_corpus(max_bytes: int, root: Path | None = None) -> Corpus:
    """Training and validation bytes from the stdlib, the same on every rank and every run."""
    root = root or stdlib_dir()
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if not files:
        raise CorpusError(f"no *.py files in {root}; the image needs Python's standard library sources")
    train, val = bytearray(), bytearray()
    used = 0
    for index, path in enumerate(files):
        if len(train) >= max_bytes:
            break
        data = path.read_bytes()
        if index % VAL_EVERY == VAL_EVERY - 1:
            if len(val) < max_bytes // VAL_EVERY:
                val += data
        else:
            train += data[: max_bytes - len(train)]
        used += 1
    if not val:
        val = train[-max(len(train) // VAL_EVERY, 1) :]  # a tiny stdlib: hold out its tail
        train = train[: len(train) - len(val)]
    return Corpus(
        train=torch.frombuffer(train, dtype=torch.uint8), val=torch.frombuffer(val, dtype=torch.uint8), files=used
    )


class Batches:
    """The batches of one rank: ``batch(step)`` is (inputs, targets), each (B, T) int64."""

    def __init__(self, corpus: Corpus, *, rank: int, world_size: int, batch_size: int, seq_len: int, seed: int) -> None:
        size = len(corpus.train) // world_size
        self.shard = corpus.train[rank * size : (rank + 1) * size]
        self.windows = (len(self.shard) - 1) // seq_len
        if self.windows < batch_size:
            raise CorpusError(
                f"rank {rank}'s shard of {len(self.shard)} bytes holds {self.windows} windows of "
                f"{seq_len + 1} bytes, fewer than one batch ({batch_size}); raise --corpus-bytes "
                "or lower --batch-size/--seq-len"
            )
        self.rank, self.seed = rank, seed
        self.batch_size, self.seq_len = batch_size, seq_len
        self._offsets = torch.arange(seq_len + 1)
        self._perm: tuple[int, list[int]] = (-1, [])

    def _order(self, epoch: int) -> list[int]:
        if self._perm[0] != epoch:
            order = list(range(self.windows))
            random.Random(f"{self.seed}/{self.rank}/{epoch}").shuffle(order)  # str seeds are stable
            self._perm = (epoch, order)
        return self._perm[1]

    def epoch(self, step: int) -> float:
        """How many passes over this rank's shard ``step`` steps make."""
        return step * self.batch_size / self.windows

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch trained at 0-based ``step``."""
        starts = []
        for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, index = divmod(pos, self.windows)
            starts.append(self._order(epoch)[index] * self.seq_len)
        chunk = self.shard[torch.tensor(starts)[:, None] + self._offsets].long()
        return chunk[:, :-1], chunk[:, 1:]


def val_batches(
    corpus: Corpus, *, batch_size: int, seq_len: int, count: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed set of validation batches: consecutive windows from the start of the split."""
    windows = min((len(corpus.val) - 1) // seq_len, batch_size * count)
    if windows < 1:
        return []
    offsets = torch.arange(seq_len + 1)
    out = []
    for first in range(0, windows, batch_size):
        starts = torch.arange(first, min(first + batch_size, windows)) * seq_len
        chunk = corpus.val[starts[:, None] + offsets].long()
        out.append((chunk[:, :-1], chunk[:, 1:]))
    return out
