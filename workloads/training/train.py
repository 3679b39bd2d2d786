"""The training loop: DDP across WORLD_SIZE workers, resume, checkpoints, reports, SIGTERM.

Every rank runs the same loop. Per step it trains its own batch, then one tiny all-reduce sums
the loss and a "stop" vote (set by SIGTERM/SIGINT on any rank), so all ranks agree on the mean
loss and on when to stop without further messages. Checkpoint steps are the same on every
rank: all ranks hand their RNG state to rank 0, which writes the checkpoint; only rank 0
prints report lines.

Exit codes: 0 all steps done (also when a checkpoint already had them all), 1 an error (a lost
peer, an unreachable store: restart the gang, it resumes), 2 bad flags/env or a checkpoint of a
different model at RUNNER_CHECKPOINT_URI, 143 (128+SIGTERM; 130 for SIGINT) stopped by the
signal after saving a checkpoint of the current step: start it again to resume.
"""

from __future__ import annotations

import random
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

import torch

from workloads.common.artifacts import ArtifactError, open_store
from workloads.common.report import emit
from workloads.training import checkpoint as ckpt
from workloads.training.config import EXIT_BAD_CONFIG, ConfigError, TrainConfig, load_config
from workloads.training.data import Batches, CorpusError, load_corpus, val_batches
from workloads.training.dist import Comm, pick_device, pick_threads
from workloads.training.model import ByteTransformer, ModelConfig, count_params, param_groups

EXIT_OK, EXIT_ERROR = 0, 1
FINAL_WINDOW = 10  # steps averaged into the result's final_loss


class CheckpointMismatchError(ValueError):
    """The checkpoint at the URI belongs to a different model than the flags describe."""


class StopFlag:
    """Set by SIGTERM/SIGINT; read once per step. The handler only sets a flag (it does not even
    print: a print inside a handler that interrupted a print raises "reentrant call"), so a
    signal in the middle of a step or a checkpoint write never interrupts it."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum

    @property
    def is_set(self) -> bool:
        return self.signum is not None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak: a pure function of the step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + torch.cos(torch.tensor(torch.pi * progress)).item()))


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Trainer:
    def __init__(self, cfg: TrainConfig, stop: StopFlag) -> None:
        self.cfg = cfg
        self.stop = stop
        self.rank = cfg.dist.rank
        self.world = cfg.dist.world_size
        self.last_uri: str | None = None

    def log(self, message: str) -> None:
        who = "training" if self.rank == 0 else f"training[rank {self.rank}]"
        print(f"{who}: {message}", flush=True)

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        self.threads = pick_threads(cfg.threads)
        torch.set_num_threads(self.threads)
        self.device = pick_device(cfg.device, cfg.dist.local_rank)
        if self.world > 1:
            self.log(f"rank {self.rank} of {self.world}: rendezvous at {cfg.dist.master_addr}:{cfg.dist.master_port}")
        self.comm = Comm(cfg.dist, self.device, cfg.dist_timeout_s)
        corpus = load_corpus(cfg.corpus_bytes)
        self.batches = Batches(
            corpus, rank=self.rank, world_size=self.world, batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=cfg.seed
        )
        self.val = val_batches(corpus, batch_size=cfg.batch_size, seq_len=cfg.seq_len, count=cfg.val_batches)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.mcfg = ModelConfig(
            seq_len=cfg.seq_len, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, dropout=cfg.dropout
        )
        self.model = ByteTransformer(self.mcfg).to(self.device)
        self.opt = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
        torch.manual_seed(cfg.seed + 7919 * (self.rank + 1))  # per-rank dropout stream
        random.seed(f"{cfg.seed}/{self.rank}")
        self.checkpoints = (
            ckpt.Checkpoints(open_store(cfg.checkpoint_uri), keep=cfg.keep, log=self.log, attempt=cfg.attempt)
            if self.comm.is_main
            else None
        )
        if self.checkpoints is not None:
            self.checkpoints.claim()  # before resuming: an older gang still running stops saving
        self.log(
            f"{count_params(self.model):,} parameters, {len(corpus.train):,} training bytes from "
            f"{corpus.files} stdlib files, device {self.device}, {self.threads} torch thread(s), "
            f"world size {self.world}" + (f" ({self.comm.backend})" if self.world > 1 else "")
        )

    def resume(self) -> tuple[int, float | None]:
        """Rank 0 loads the newest verified checkpoint and broadcasts it; returns (step, its loss)."""
        payload = None
        if self.checkpoints is not None:
            loaded = self.checkpoints.load_latest()
            if loaded is not None:
                payload = {
                    "step": loaded.step,
                    "uri": loaded.uri,
                    "loss": loaded.manifest.meta.get("loss"),
                    "model": loaded.files[ckpt.MODEL_FILE],
                    "trainer": loaded.files[ckpt.TRAINER_FILE],
                }
        payload = self.comm.broadcast(payload)
        if payload is None:
            self.log(f"no checkpoint under {self.cfg.checkpoint_uri}: starting at step 0")
            return 0, None
        model_doc, state = ckpt.from_bytes(payload["model"]), ckpt.from_bytes(payload["trainer"])
        saved = ModelConfig.from_dict(model_doc["config"])
        if saved != self.mcfg:
            raise CheckpointMismatchError(
                f"the checkpoint {payload['uri']} is of model {saved.as_dict()}, the flags ask for "
                f"{self.mcfg.as_dict()}; use the same model flags or another RUNNER_CHECKPOINT_URI"
            )
        self.model.load_state_dict(model_doc["state_dict"])
        self.opt.load_state_dict(state["optimizer"])
        rngs = state.get("rng") or []
        if len(rngs) == self.world:
            set_rng_state(rngs[self.rank], self.device)
        else:
            torch.manual_seed(self.cfg.seed + 7919 * (self.rank + 1) + payload["step"])
            self.log(
                f"checkpoint was written by {len(rngs)} workers, now {self.world}: data shards and RNG "
                "streams differ from the uninterrupted run"
            )
        changed = {
            k: (v, self.cfg.hyper().get(k))
            for k, v in (state.get("hyper") or {}).items()
            if self.cfg.hyper().get(k) != v
        }
        if changed:
            self.log(f"resuming with changed settings {changed} (saved, now)")
        self.last_uri = payload["uri"]
        self.log(f"resumed from {payload['uri']} at step {payload['step']}")
        if self.comm.is_main:
            emit("resume", step=payload["step"], total_steps=self.cfg.steps, uri=payload["uri"])
        return int(payload["step"]), payload["loss"]

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, step: int, loss: float, reason: str) -> None:
        rngs = self.comm.gather(rng_state(self.device))  # a collective: every rank calls it
        if self.checkpoints is None:
            return
        t0 = time.perf_counter()
        model_doc = {
            "format": ckpt.FORMAT,
            "config": self.mcfg.as_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }
        state = {
            "format": ckpt.FORMAT,
            "step": step,
            "optimizer": self.opt.state_dict(),
            "rng": rngs,
            "hyper": self.cfg.hyper(),
            "data": {
                "samples_per_rank": step * self.cfg.batch_size,
                "epoch": self.batches.epoch(step),
                "world_size": self.world,
            },
        }
        files = {ckpt.MODEL_FILE: ckpt.to_bytes(model_doc), ckpt.TRAINER_FILE: ckpt.to_bytes(state)}
        meta = {
            "loss": loss,
            "world_size": self.world,
            "model": self.mcfg.as_dict(),
            "hyper": self.cfg.hyper(),
            "torch": torch.__version__,
        }
        self.last_uri = self.checkpoints.save(step, files, meta)
        emit(
            "checkpoint",
            step=step,
            uri=self.last_uri,
            reason=reason,
            bytes=sum(map(len, files.values())),
            seconds=round(time.perf_counter() - t0, 3),
        )

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.cfg
        self.setup()
        start, saved_loss = self.resume()
        net: torch.nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        tokens_per_step = cfg.batch_size * cfg.seq_len * self.world
        losses: list[float] = []
        window: list[float] = []
        first_loss = None
        t_start = t_window = time.perf_counter()
        t_first = None  # end of the first step: the steady-state clock starts there
        step_window = start
        net.train()
        for step in range(start, cfg.steps):
            for group in self.opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            x, y = (t.to(self.device, non_blocking=True) for t in self.batches.batch(step))
            _, loss = net(x, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            done = step + 1
            loss_sum, votes = self.comm.sum([loss.item(), 1.0 if self.stop.is_set else 0.0])
            mean_loss = loss_sum / self.world
            losses.append(mean_loss)
            window.append(mean_loss)
            first_loss = mean_loss if first_loss is None else first_loss
            stopping = votes > 0 and done < cfg.steps
            now = time.perf_counter()
            if t_first is None:
                t_first = now
            if self.comm.is_main and (done % cfg.log_every == 0 or done in (start + 1, cfg.steps) or stopping):
                rate = (done - step_window) / max(now - t_window, 1e-9)
                emit(
                    "progress",
                    step=done,
                    total_steps=cfg.steps,
                    loss=round(sum(window) / len(window), 6),
                    steps_per_s=round(rate, 3),
                    tokens_per_s=round(rate * tokens_per_step, 1),
                    epoch=round(self.batches.epoch(done), 4),
                    lr=round(lr_at(step, cfg), 8),
                )
                window, t_window, step_window = [], now, done
            if done % cfg.checkpoint_every == 0 or done == cfg.steps or stopping:
                self.save(done, mean_loss, "sigterm" if stopping else "final" if done == cfg.steps else "interval")
            if stopping:
                self.comm.barrier()
                signum = self.stop.signum or signal.SIGTERM  # no signal here: another rank got one
                why = signal.Signals(signum).name if self.stop.is_set else "a stop signal on another rank"
                where = self.last_uri if self.comm.is_main else "saved by rank 0"
                self.log(f"stopped by {why} at step {done} of {cfg.steps}; checkpoint {where}")
                return 128 + signum
        elapsed = time.perf_counter() - t_start
        trained = max(0, cfg.steps - start)
        if trained == 0:
            self.log(f"the checkpoint at step {start} already has the {cfg.steps} steps asked for: nothing to train")
            steady = 0.0
        elif t_first is not None and trained > 1:  # steady state: the steps after the first (warm-up) one
            steady = (trained - 1) / max(time.perf_counter() - t_first, 1e-9)
        else:
            steady = trained / max(elapsed, 1e-9)
        val_loss = self.evaluate() if self.comm.is_main else None
        self.comm.barrier()  # leave together: a rank that tears down early aborts its peers' gloo threads
        if self.comm.is_main:
            tail = losses[-FINAL_WINDOW:] or ([saved_loss] if saved_loss is not None else [])
            emit(
                "result",
                final_loss=round(sum(tail) / len(tail), 6) if tail else None,
                first_loss=None if first_loss is None else round(first_loss, 6),
                val_loss=None if val_loss is None else round(val_loss, 6),
                steps=cfg.steps,
                resumed_from=start,
                trained_steps=trained,
                elapsed_s=round(elapsed, 3),
                steps_per_s=round(steady, 3),
                tokens_per_s=round(steady * tokens_per_step, 1),
                world_size=self.world,
                checkpoint=self.last_uri,
            )
        self.log(f"done: {cfg.steps} steps")
        return EXIT_OK

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss over the fixed validation batches (rank 0 only; no collectives)."""
        if not self.val:
            return None
        self.model.eval()
        total = sum(self.model(x.to(self.device), y.to(self.device))[1].item() for x, y in self.val)
        self.model.train()
        return total / len(self.val)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, train, map failures to exit codes (a bug still prints its traceback)."""
    stop = StopFlag().install()
    try:
        cfg = load_config(argv)
    except ConfigError as exc:
        print(f"training: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_CONFIG
    trainer = Trainer(cfg, stop)
    finished = False
    try:
        code = trainer.run()
        finished = code == EXIT_OK
        return code
    except (CheckpointMismatchError, ConfigError) as exc:
        trainer.log(str(exc))
        return EXIT_BAD_CONFIG
    except (ArtifactError, CorpusError, ckpt.SupersededError) as exc:
        trainer.log(f"error: {exc}")
        return EXIT_ERROR
    except RuntimeError as exc:  # torch.distributed: a peer died or the rendezvous timed out
        trainer.log(
            f"error on rank {cfg.dist.rank}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}; "
            "the gang must be restarted (it resumes from the last checkpoint)"
        )
        traceback.print_exc(limit=3)
        return EXIT_ERROR
    finally:
        # A finished run leaves the process group to the process's exit (``__main__``): every rank
        # has passed the last barrier, and gloo's teardown could abort (SIGABRT) once a peer
        # that finished first had gone. A failed run tears it down to free the peers at once.
        if hasattr(trainer, "comm") and not finished:
            trainer.comm.close()
