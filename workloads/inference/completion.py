"""Completions from a training checkpoint (RUNNER_MODEL=file://... or s3://...).

The model and its sampler belong to the training workload: ``workloads.training.serve`` gives
``load_for_inference(uri, device)`` (the newest verified checkpoint under a run prefix, or one
step folder) and ``generate(model, prompt, max_tokens, temperature, stop=, seed=)``. This module
only adapts them to the server's backend interface. The model is byte-level: a prompt's tokens
are its UTF-8 bytes, and the model reads the last ``seq_len`` of them (a sliding window), so a
long prompt is valid; a batch is generated prompt by prompt (the sampler is per prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workloads.inference.backend import CompletionBackend, CompletionOutput, CompletionParams, Prepared
from workloads.inference.errors import BackendLoadError, InvalidRequestError
from workloads.inference.settings import ServerSettings

#: Longest prompt accepted, in bytes; the model only reads its last ``seq_len`` bytes anyway.
MAX_PROMPT_BYTES = 32 * 1024
#: Most tokens one completion may ask for.
MAX_COMPLETION_TOKENS = 2048


@dataclass(frozen=True)
class _Job:
    prompt: str
    params: CompletionParams


class CheckpointBackend(CompletionBackend):
    max_tokens = MAX_PROMPT_BYTES

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.uri = settings.model
        self.model_id = settings.model_id or settings.model  # what /v1/models lists, clients send as ``model``
        self._model: Any = None
        self._generate: Any = None
        self.step: int | None = None

    def load(self) -> None:
        try:
            from workloads.training.serve import generate, load_for_inference
        except ImportError as exc:
            raise BackendLoadError(
                f"completions need the training workload's loader ({exc}). To fix: "
                "use an image that has workloads/training (the inference image does)"
            ) from None
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.workers = self.settings.workers_for(self.device)
        torch.set_num_threads(self.settings.threads_for(self.device))
        try:
            self._model = load_for_inference(self.uri, device=self.device)
        except Exception as exc:  # the artifact store's errors name the URI and what to do
            raise BackendLoadError(f"cannot load a checkpoint from {self.uri}: {exc}") from None
        self._generate = generate
        self.step = getattr(self._model, "step", None)
        self.aliases = frozenset({getattr(self._model, "checkpoint_uri", self.uri)})

    def warmup(self) -> None:
        self.run([_Job("warm up", CompletionParams(max_tokens=2, temperature=0.0))])

    def prepare(self, prompt: str, params: CompletionParams, param: str) -> Prepared:
        size = len(prompt.encode("utf-8"))
        if size > MAX_PROMPT_BYTES:
            raise InvalidRequestError(
                f"{param} is {size} bytes (this model's tokens); at most {MAX_PROMPT_BYTES}",
                param=param,
                code="context_length_exceeded",
            )
        if params.max_tokens > MAX_COMPLETION_TOKENS:
            raise InvalidRequestError(
                f"max_tokens must be <= {MAX_COMPLETION_TOKENS}, got {params.max_tokens}", param="max_tokens"
            )
        return Prepared(payload=_Job(prompt, params), tokens=size)

    def run(self, batch: Sequence[_Job]) -> list[CompletionOutput]:
        outputs = []
        for job in batch:
            p = job.params
            text = self._generate(
                self._model, job.prompt, max_tokens=p.max_tokens, temperature=p.temperature, stop=p.stop, seed=p.seed
            )
            used = min(len(text.encode("utf-8")), p.max_tokens)  # a replacement char can add bytes
            outputs.append(
                CompletionOutput(
                    text=text, completion_tokens=used, finish_reason="length" if used >= p.max_tokens else "stop"
                )
            )
        return outputs

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "checkpoint_step": self.step}
