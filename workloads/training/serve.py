"""Serving a trained checkpoint: what the inference workload calls for ``POST /v1/completions``.

    model = load_for_inference("s3://bucket/runs/w-123")        # newest verified checkpoint
    model = load_for_inference("file:///ckpt/w-123/step-00000200")  # or one checkpoint folder
    text = generate(model, "def main(", max_tokens=64, temperature=0.8)   # the completion only

Only ``model.pt`` is fetched (checksum-verified), never the optimizer state. The model is a
byte-level LM: the prompt is UTF-8 bytes, the completion is decoded with replacement
characters where sampling cut a multi-byte character. ``model.checkpoint_uri`` and
``model.step`` say what was loaded (for ``/v1/models``). Try it from a shell::

    python -m workloads.training.serve file:///tmp/ckpt "import " --max-tokens 80
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from workloads.common.artifacts import MANIFEST, ArtifactError, fetch_verified, open_store
from workloads.training.checkpoint import MODEL_FILE, Checkpoints, from_bytes
from workloads.training.model import ByteTransformer, ModelConfig


class CheckpointNotFoundError(ArtifactError):
    """No complete, verified checkpoint at the URI."""


def load_for_inference(uri: str, device: str | torch.device = "cpu") -> ByteTransformer:
    """The model of the checkpoint folder ``uri``, or of the newest verified checkpoint under
    the run prefix ``uri``; in eval mode on ``device``."""
    store = open_store(uri)
    if store.exists(MANIFEST):
        manifest, files = fetch_verified(store, "", [MODEL_FILE])
        source, step = store.url(), int(manifest.meta.get("step", 0))
    else:
        loaded = Checkpoints(store, log=lambda m: print(f"serve: {m}", file=sys.stderr)).load_latest([MODEL_FILE])
        if loaded is None:
            raise CheckpointNotFoundError(
                f"no complete checkpoint under {uri}; point at a training run's "
                "RUNNER_CHECKPOINT_URI (or one of its step-NNNNNNNN folders)"
            )
        files, source, step = loaded.files, loaded.uri, loaded.step
    doc = from_bytes(files[MODEL_FILE])
    model = ByteTransformer(ModelConfig.from_dict(doc["config"]))
    model.load_state_dict(doc["state_dict"])
    model.checkpoint_uri = source
    model.step = step
    return model.to(device).eval()


@torch.no_grad()
def generate(
    model: ByteTransformer,
    prompt: str,
    max_tokens: int = 64,
    temperature: float = 1.0,
    *,
    top_k: int | None = None,
    stop: Sequence[str] = (),
    seed: int | None = None,
) -> str:
    """Sample up to ``max_tokens`` bytes after ``prompt``; temperature 0 is greedy. Ends early
    at the first of ``stop`` (which is not included), as OpenAI's completions do."""
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    device = next(model.parameters()).device
    ctx = model.config.seq_len
    ids = list(prompt.encode("utf-8")) or [ord("\n")]
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    out: list[int] = []
    for _ in range(max_tokens):
        window = torch.tensor([(ids + out)[-ctx:]], dtype=torch.long, device=device)
        logits = model(window)[0][0, -1].float().cpu()
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen))
        out.append(nxt)
        if stop:
            text = bytes(out).decode("utf-8", errors="replace")
            cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
            if cut >= 0:
                return text[:cut]
    return bytes(out).decode("utf-8", errors="replace")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m workloads.training.serve", description="Complete a prompt with a trained checkpoint."
    )
    p.add_argument("uri", help="a run's checkpoint prefix or one step folder (file:// or s3://)")
    p.add_argument("prompt")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    try:
        model = load_for_inference(args.uri)
        print(args.prompt + generate(model, args.prompt, args.max_tokens, args.temperature, seed=args.seed))
    except (ArtifactError, ValueError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
