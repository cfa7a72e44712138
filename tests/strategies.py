"""Hypothesis strategies shared by the property tests.

There is one source of truth for random programs: `rasplang.testing.random_program`;
the strategies here only draw its seed and arguments, and random inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from rasplang.nodes import SOp
from rasplang.testing import random_program

VOCABS: tuple[tuple[Any, ...], ...] = (("a", "b", "c"), (1, 2, 3), ("a", "b"), (0, 1, 2, 3))


@st.composite
def programs(
    draw: st.DrawFn,
    *,
    vocab: Sequence[Any] | None = None,
    max_depth: int = 8,
    compilable: bool | None = None,
) -> tuple[SOp, tuple[Any, ...]]:
    """``(program, vocab)``: a random well-typed RASP program and its vocabulary."""
    vocab = tuple(vocab) if vocab is not None else draw(st.sampled_from(VOCABS))
    seed = draw(st.integers(0, 2**32 - 1))
    depth = draw(st.integers(1, max_depth))
    if compilable is None:
        compilable = draw(st.booleans())
    program = random_program(np.random.default_rng(seed), vocab=vocab, max_depth=depth,
                             compilable=compilable)
    return program, vocab


def inputs(
    vocab: Sequence[Any], max_seq_len: int, *, min_size: int = 1, max_size: int = 30
) -> st.SearchStrategy[list[list[Any]]]:
    """Batches of sequences over ``vocab`` with lengths 0..``max_seq_len``."""
    sequence = st.lists(st.sampled_from(list(vocab)), min_size=0, max_size=max_seq_len)
    return st.lists(sequence, min_size=min_size, max_size=max_size)


def backend_params() -> list[Any]:
    """``numpy``, ``numba`` and ``cupy`` (marked gpu, skipped without CuPy and a GPU)."""
    import pytest

    from rasplang.interpreter.kernels_cupy import cupy_available

    return [
        "numpy",
        "numba",
        pytest.param("cupy", marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU"),
        ]),
    ]
