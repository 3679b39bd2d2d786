"""Settings of one training run: command-line flags, each falling back to an environment variable.

Precedence: flag > environment variable > default. The runner sets the contract's variables
(WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, RUNNER_CHECKPOINT_URI,
RUNNER_CHECKPOINT_EVERY); hyperparameters come as flags in the spec's ``command`` or as
``TRAIN_*`` variables in its ``env``. Everything is read here once into one ``TrainConfig``
that is passed down; nothing below reads the environment.

Bad values raise ``ConfigError`` naming the flag and its variable (the process exits 2).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXIT_BAD_CONFIG = 2


class ConfigError(ValueError):
    """A flag or environment variable has a value the trainer cannot use."""


@dataclass(frozen=True)
class DistEnv:
    """The rendezvous the runner sets; world size 1 needs none of it."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run. ``steps`` is the total (a resumed run continues up to it)."""

    steps: int = 200
    batch_size: int = 8
    seq_len: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.1
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.0
    seed: int = 1234
    corpus_bytes: int = 2_000_000
    val_batches: int = 8
    log_every: int = 10
    checkpoint_uri: str = ""  # "": file://<cwd>/checkpoints, filled in by load_config
    checkpoint_every: int = 100
    keep: int = 3
    threads: int = 0  # 0: from the container's CPU quota, else 1
    device: str = "auto"  # auto | cpu | cuda
    dist_timeout_s: float = 120.0
    attempt: int = 0  # the runner's attempt number (RUNNER_ATTEMPT): fences older attempts' saves
    dist: DistEnv = field(default_factory=DistEnv)

    def hyper(self) -> dict[str, Any]:
        """What shapes the trajectory (stored in each checkpoint to explain a changed resume)."""
        keys = ("steps", "batch_size", "seq_len", "lr", "warmup_steps", "weight_decay", "seed", "corpus_bytes")
        return {k: getattr(self, k) for k in keys} | {"world_size": self.dist.world_size}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# (flag, env var, type, help); the default is TrainConfig's field of the same name.
FLAGS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("--steps", "TRAIN_STEPS", int, "total optimizer steps"),
    ("--batch-size", "TRAIN_BATCH_SIZE", int, "sequences per step per worker"),
    ("--seq-len", "TRAIN_SEQ_LEN", int, "tokens (bytes) per sequence; also the model's context"),
    ("--lr", "TRAIN_LR", float, "peak AdamW learning rate (linear warm-up, cosine decay to 10%%)"),
    ("--warmup-steps", "TRAIN_WARMUP_STEPS", int, "learning-rate warm-up steps"),
    ("--weight-decay", "TRAIN_WEIGHT_DECAY", float, "AdamW weight decay of the matrices"),
    ("--d-model", "TRAIN_D_MODEL", int, "model width"),
    ("--n-layers", "TRAIN_N_LAYERS", int, "transformer blocks"),
    ("--n-heads", "TRAIN_N_HEADS", int, "attention heads (must divide --d-model)"),
    ("--dropout", "TRAIN_DROPOUT", float, "dropout probability"),
    ("--seed", "TRAIN_SEED", int, "seed of init, data order and dropout"),
    ("--corpus-bytes", "TRAIN_CORPUS_BYTES", int, "bytes of stdlib source to train on"),
    ("--val-batches", "TRAIN_VAL_BATCHES", int, "validation batches evaluated at the end (0: none)"),
    ("--log-every", "TRAIN_LOG_EVERY", int, "steps between progress reports"),
    ("--checkpoint-uri", "RUNNER_CHECKPOINT_URI", str, "file:// or s3:// prefix for checkpoints"),
    ("--checkpoint-every", "RUNNER_CHECKPOINT_EVERY", int, "steps between checkpoints"),
    ("--keep", "RUNNER_CHECKPOINT_KEEP", int, "complete checkpoints to keep"),
    ("--threads", "TRAIN_THREADS", int, "torch threads per worker (0: the CPU quota, else 1)"),
    ("--device", "TRAIN_DEVICE", str, "auto, cpu or cuda"),
    ("--dist-timeout-s", "TRAIN_DIST_TIMEOUT_S", float, "seconds a collective waits for a lost peer"),
    (
        "--attempt",
        "RUNNER_ATTEMPT",
        int,
        "the runner's attempt number; a newer attempt's claim on the "
        "checkpoints stops this one's saves (0: no fencing)",
    ),
]

# Lowest allowed value of each numeric setting.
_MINIMUMS = {
    "steps": 1,
    "batch_size": 1,
    "seq_len": 2,
    "warmup_steps": 0,
    "d_model": 8,
    "n_layers": 1,
    "n_heads": 1,
    "corpus_bytes": 10_000,
    "val_batches": 0,
    "log_every": 1,
    "checkpoint_every": 1,
    "keep": 1,
    "threads": 0,
    "lr": 0.0,
    "weight_decay": 0.0,
    "dist_timeout_s": 1.0,
    "attempt": 0,
}


def _attr(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _from_env(env: Mapping[str, str], name: str, kind: Callable[[str], Any], flag: str) -> Any:
    raw = env[name]
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} (the env fallback of {flag}): expected {kind.__name__}") from None


def _dist_from_env(env: Mapping[str, str]) -> DistEnv:
    def integer(name: str, default: int) -> int:
        raw = env.get(name, "")
        if raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: expected an integer") from None

    world, rank = integer("WORLD_SIZE", 1), integer("RANK", 0)
    local_rank, port = integer("LOCAL_RANK", 0), integer("MASTER_PORT", 29500)
    if world < 1:
        raise ConfigError(f"WORLD_SIZE={world}: must be >= 1")
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank}: must be in 0..{world - 1} for WORLD_SIZE={world}")
    if local_rank < 0:
        raise ConfigError(f"LOCAL_RANK={local_rank}: must be >= 0")
    if not 1 <= port <= 65535:
        raise ConfigError(f"MASTER_PORT={port}: must be a TCP port (1..65535)")
    return DistEnv(
        world_size=world,
        rank=rank,
        local_rank=local_rank,
        master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
        master_port=port,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workloads.training",
        description="Train a small byte-level causal transformer on Python's stdlib sources, "
        "DDP across WORLD_SIZE workers, checkpointing to RUNNER_CHECKPOINT_URI.",
        epilog="Each flag falls back to the environment variable in brackets, then to the default.",
    )
    defaults = TrainConfig()
    for flag, env_name, kind, text in FLAGS:
        default = "file://$PWD/checkpoints" if flag == "--checkpoint-uri" else getattr(defaults, _attr(flag))
        p.add_argument(flag, type=kind, default=None, help=f"{text} [{env_name}; default {default}]")
    return p


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> TrainConfig:
    """Flags over environment over defaults, validated; ConfigError names what is wrong.
    (argparse itself exits 2 for a malformed flag value.)"""
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for flag, env_name, kind, _ in FLAGS:
        attr = _attr(flag)
        given = getattr(args, attr)
        if given is not None:
            values[attr] = given
        elif env.get(env_name, "") != "":
            values[attr] = _from_env(env, env_name, kind, flag)
    values.setdefault("checkpoint_uri", "file://" + str(Path.cwd() / "checkpoints"))
    cfg = TrainConfig(**values, dist=_dist_from_env(env))
    for attr, minimum in _MINIMUMS.items():
        if getattr(cfg, attr) < minimum:
            raise ConfigError(f"--{attr.replace('_', '-')}={getattr(cfg, attr)}: must be >= {minimum}")
    if cfg.d_model % cfg.n_heads:
        raise ConfigError(f"--n-heads={cfg.n_heads} must divide --d-model={cfg.d_model}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"--dropout={cfg.dropout}: must be in [0, 1)")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device={cfg.device!r}: use auto, cpu or cuda")
    if not cfg.checkpoint_uri.startswith(("file://", "s3://")):
        raise ConfigError(
            f"--checkpoint-uri / RUNNER_CHECKPOINT_URI={cfg.checkpoint_uri!r}: use file:///abs/path "
            "or s3://bucket/prefix"
        )
    return cfg
