"""Packing a batch into rows: every input once, rows within capacity and evenly filled, and
packed embeddings equal to each sentence embedded alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workloads.inference.packing import ROW_TOKENS, SLACK, pack


@given(st.lists(st.integers(1, 300), max_size=80))
def test_every_input_once_in_rows_within_capacity(lengths: list[int]) -> None:
    rows = pack(lengths)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    if lengths:
        total = sum(lengths)
        capacity = max(max(lengths), math.ceil(total / max(1, math.ceil(total / ROW_TOKENS)) * SLACK))
        assert all(sum(lengths[i] for i in row) <= capacity for row in rows)


def test_short_sentences_fill_few_even_rows_and_a_long_one_gets_its_own() -> None:
    lengths = [8, 30, 12, 25, 19, 8, 30, 14, 22, 10] * 4  # 712 tokens
    rows = pack(lengths)
    fills = [sum(lengths[i] for i in row) for row in rows]
    assert len(rows) == math.ceil(712 / ROW_TOKENS)  # the fewest rows of ~ROW_TOKENS tokens
    assert max(fills) - min(fills) <= 30  # spread evenly: the last row is not mostly padding
    assert pack([200, 10, 10]) == [[0], [1, 2]]
    assert pack([]) == []


@pytest.fixture(scope="module")
def backend():
    from workloads.inference.minilm import MiniLMBackend
    from workloads.inference.settings import ServerSettings

    b = MiniLMBackend(ServerSettings.from_env())
    b.load()
    return b


def test_packed_embeddings_equal_each_sentence_embedded_alone(backend) -> None:
    texts = [
        "a",
        "the runner packs short sentences side by side into one row",
        "word " * 180,  # longer than a row: a row of its own
        *(f"sentence {i} of a batch with lengths that vary " + "more " * (i % 9) for i in range(30)),
    ]
    payloads = [p.payload for p in backend.prepare(texts)]
    assert backend.device == "cpu"
    packed = backend.run(payloads)
    alone = np.stack([backend.run([p])[0] for p in payloads])
    cosines = (packed * alone).sum(axis=1)
    assert packed.shape == (len(texts), backend.dimensions)
    assert cosines.min() > 0.99999, cosines.min()
    assert np.allclose(np.linalg.norm(packed, axis=1), 1.0, atol=1e-5)
