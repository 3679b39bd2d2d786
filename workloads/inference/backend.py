"""The backend interface: what the server and the batcher need from a model, and nothing more.

Two kinds sit behind the same batcher and HTTP server:

- ``EmbeddingBackend`` (``POST /v1/embeddings``): ``prepare`` turns texts into model inputs
  (tokenising, counting and length-checking them on the request path, so a bad input is a 400
  before it queues), ``run`` embeds one batch of prepared inputs in a worker thread.
- ``CompletionBackend`` (``POST /v1/completions``): the same two steps for prompts.

A new model is one module with one class and one entry in ``load_backend``; the server picks
routes by ``kind``. Backends import torch and friends inside ``load`` so that importing this
package (tests, the bench's client side) stays light.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from workloads.inference.errors import BackendLoadError
from workloads.inference.settings import ServerSettings

CHECKPOINT_SCHEMES = ("file://", "s3://")


@dataclass(frozen=True)
class Prepared:
    """One input ready to join a batch: what the model eats, and the tokens usage reports."""

    payload: Any
    tokens: int


@dataclass(frozen=True)
class CompletionParams:
    """Per-request sampling settings, carried with each prompt through the batcher."""

    max_tokens: int = 16
    temperature: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class CompletionOutput:
    text: str
    completion_tokens: int
    finish_reason: str = "length"


class Backend(ABC):
    """A loaded model. ``load`` and ``warmup`` run once, off the event loop; ``run`` runs in a
    worker thread, at most ``workers`` at a time, each call with one batch."""

    kind: ClassVar[str]
    model_id: str
    aliases: frozenset[str] = frozenset()
    device: str = "cpu"
    #: Largest input the model takes, in its own tokens (the limit ``prepare`` enforces).
    max_tokens: int
    #: Batches this backend runs at the same time (sizes the worker pool).
    workers: int = 1

    def serves(self, name: str) -> bool:
        return name == self.model_id or name in self.aliases

    @abstractmethod
    def load(self) -> None:
        """Read weights, pick the device, configure threads. Raises BackendLoadError."""

    @abstractmethod
    def warmup(self) -> None:
        """Run the model once on each batch shape class, so the first request is not slow."""

    @abstractmethod
    def run(self, batch: Sequence[Any]) -> Sequence[Any]:
        """One result per payload, in order. An exception fails this batch's requests only."""

    #: Size of a prepared payload for grouping similar inputs into a batch; None: FIFO batches.
    size_of: Callable[[Any], int] | None = None

    def describe(self) -> dict[str, Any]:
        """What /healthz and the ready report show about the model."""
        return {
            "model": self.model_id,
            "task": self.kind,
            "device": self.device,
            "max_tokens": self.max_tokens,
            "workers": self.workers,
        }


class EmbeddingBackend(Backend):
    kind: ClassVar[str] = "embedding"
    dimensions: int

    @abstractmethod
    def prepare(self, texts: Sequence[str]) -> list[Prepared]:
        """Tokenise and check ``texts``; raises InvalidRequestError naming ``input[i]``."""

    # run(batch of payloads) -> float32 array (len(batch), dimensions), rows L2-normalised


class CompletionBackend(Backend):
    kind: ClassVar[str] = "completion"

    @abstractmethod
    def prepare(self, prompt: str, params: CompletionParams, param: str) -> Prepared:
        """Check one prompt (``param`` names it in errors, e.g. ``prompt[2]``)."""

    # run(batch of payloads) -> list[CompletionOutput]


def _minilm(settings: ServerSettings) -> Backend:
    from workloads.inference.minilm import MiniLMBackend

    return MiniLMBackend(settings)


def _checkpoint(settings: ServerSettings) -> Backend:
    from workloads.inference.completion import CheckpointBackend

    return CheckpointBackend(settings)


#: Model names this image serves, lower-cased, each to a factory. Checkpoint URIs go to the
#: completion backend. An unknown name fails loudly at start, never at the first request.
MODELS = {"all-minilm-l6-v2": _minilm, "sentence-transformers/all-minilm-l6-v2": _minilm}


def load_backend(settings: ServerSettings) -> Backend:
    """The backend for ``settings.model``, not yet loaded (call ``load`` in a thread)."""
    name = settings.model
    if name.startswith(CHECKPOINT_SCHEMES):
        return _checkpoint(settings)
    factory = MODELS.get(name.lower())
    if factory is None:
        raise BackendLoadError(
            f"RUNNER_MODEL={name!r} is not a model this image serves. To fix: set it to one of "
            f"{', '.join(sorted({'all-MiniLM-L6-v2', 'sentence-transformers/all-MiniLM-L6-v2'}))} "
            "or to a training checkpoint URI (file://... or s3://...)"
        )
    return factory(settings)
