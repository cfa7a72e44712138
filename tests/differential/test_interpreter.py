"""Differential: every library program, evaluate_batch vs evaluate, on every backend.

For each program of `rasplang.lib.PROGRAMS`: all inputs of length 0..5 over (up to) three
of its tokens, and 500 random inputs of length 0..16 over its vocabulary and over a
two-token sub-vocabulary; causal and not. The oracle runs once per case and is shared
by the backends.
"""

from __future__ import annotations

import functools
import itertools
import zlib

import numpy as np
import pytest

from rasplang.interpreter import evaluate_batch
from rasplang.lib import PROGRAMS
from rasplang.testing import assert_batch_matches_oracle, oracle_outputs
from tests.strategies import backend_params

CASES = ("exhaustive", "random16", "random_subvocab")


@functools.cache
def _program(name: str):
    return PROGRAMS[name].build()


@functools.lru_cache(maxsize=8)
def _case(name: str, case: str, causal: bool):
    """(vocab, max_seq_len, inputs, oracle outputs) of one case."""
    lib = PROGRAMS[name]
    rng = np.random.default_rng(zlib.crc32(f"{name}:{case}".encode()))
    if case == "exhaustive":
        vocab, max_seq_len = tuple(lib.vocab[:3]), 5
        inputs = [list(x) for n in range(max_seq_len + 1)
                  for x in itertools.product(vocab, repeat=n)]
    else:
        vocab = tuple(lib.vocab) if case == "random16" else tuple(lib.vocab[:2])
        max_seq_len = 16 if case == "random16" else 8
        inputs = [[vocab[i] for i in rng.integers(len(vocab), size=int(rng.integers(0, 17)))]
                  [:max_seq_len] for _ in range(500)]
    return vocab, max_seq_len, inputs, oracle_outputs(_program(name), inputs, causal)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_library_program_matches_evaluate(name, case, causal, backend):
    """evaluate_batch gives evaluate's output (or its first error) on every input."""
    vocab, max_seq_len, inputs, expected = _case(name, case, causal)

    def run(xs):
        return evaluate_batch(_program(name), xs, vocab=vocab, max_seq_len=max_seq_len,
                              causal=causal, backend=backend)

    assert_batch_matches_oracle(run, inputs, expected)
