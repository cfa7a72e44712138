"""Differential: every library program, evaluate_batch vs evaluate, on every backend.

For each program of `rasplang.lib.PROGRAMS`: all inputs of length 0..5 over (up to) three
of its tokens, and 500 random inputs of length 0..16 over its vocabulary and over a
two-token sub-vocabulary; causal and not. The oracle runs once per case and is shared
by the backends. Means of means are compared bit for bit (`assert_batch_matches_oracle`
allows floats 1e-12 apart), with the numba backend's generic and counting kernels forced.
"""

from __future__ import annotations

import functools
import itertools
import zlib

import numpy as np
import pytest

from rasplang import (
    Aggregate,
    Comparison,
    Map,
    Select,
    evaluate,
    indices,
    numerical,
    tokens,
)
from rasplang.interpreter import backends, evaluate_batch
from rasplang.lib import PROGRAMS, make_frac_prevs
from rasplang.testing import assert_batch_matches_oracle, oracle_outputs
from tests.strategies import backend_params

CASES = ("exhaustive", "random16", "random_subvocab")


@functools.cache
def _program(name: str, max_seq_len: int):
    return PROGRAMS[name].build(max_seq_len)


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
    return vocab, max_seq_len, inputs, oracle_outputs(_program(name, max_seq_len), inputs, causal)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_library_program_matches_evaluate(name, case, causal, backend):
    """evaluate_batch gives evaluate's output (or its first error) on every input."""
    vocab, max_seq_len, inputs, expected = _case(name, case, causal)

    def run(xs):
        return evaluate_batch(_program(name, max_seq_len), xs, vocab=vocab,
                              max_seq_len=max_seq_len,
                              causal=causal, backend=backend)

    assert_batch_matches_oracle(run, inputs, expected)


# ------------------------------------------------------------ means of means, bit for bit

def _mean_programs() -> dict:
    """Numerical Aggregates whose input is itself a mean (floats such as 1/3, whose exact
    sums need more than 53 bits), and a categorical mean of means."""
    prevs = Select(indices, indices, Comparison.LEQ)
    # A categorical Aggregate of several different numbers: its means are outside its
    # value set, so the numerical Aggregate above it meets means the analysis never saw.
    spread = Aggregate(Select(tokens, tokens, Comparison.LEQ), tokens, default=0)
    thirds = numerical(Aggregate(Select(tokens, tokens, Comparison.LT),
                                 numerical(Map(lambda x: x / 3, tokens)), default=0))
    return {
        "frac_prevs_of_frac_prevs": numerical(Aggregate(prevs, make_frac_prevs(tokens == 1),
                                                        default=0)),
        "mean_of_spread_mean": numerical(Aggregate(prevs, spread, default=0)),
        "mean_of_thirds_means": numerical(Aggregate(
            Select(tokens, indices, Comparison.NEQ), thirds, default=0)),
        "spread_mean_of_spread_mean": Aggregate(Select(indices, tokens, Comparison.GEQ),
                                                spread, default=0),
    }


MEAN_PROGRAMS = _mean_programs()
MEAN_KERNELS = [p for p in backend_params() if p != "numba"] + ["numba-generic",
                                                                 "numba-counting"]


def _bits(output: list) -> list:
    """``output`` with each float as its hex string, so that ``==`` compares floats bit
    for bit (sign of zero included)."""
    return [(type(v), v.hex()) if isinstance(v, float) else (type(v), v) for v in output]


@functools.lru_cache(maxsize=8)
def _mean_case(name: str, case: str, causal: bool):
    """(vocab, max_seq_len, inputs, evaluate's outputs) of one case."""
    vocab = (0, 1, 2)
    if case == "exhaustive":
        max_seq_len = 6
        inputs = [list(x) for n in range(max_seq_len + 1)
                  for x in itertools.product(vocab, repeat=n)]
    else:
        max_seq_len = 16
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        inputs = [rng.integers(3, size=int(rng.integers(0, 17))).tolist() for _ in range(400)]
    return vocab, max_seq_len, inputs, oracle_outputs(MEAN_PROGRAMS[name], inputs, causal)


@pytest.mark.parametrize("kernel", MEAN_KERNELS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("name,case", [
    *((name, "exhaustive") for name in MEAN_PROGRAMS),
    ("mean_of_spread_mean", "random16"), ("spread_mean_of_spread_mean", "random16"),
])
def test_means_of_means_equal_evaluate_bit_for_bit(name, case, causal, kernel, monkeypatch):
    """Means of means equal evaluate's floats bit for bit (no 1-ulp slips), every kernel."""
    vocab, max_seq_len, inputs, expected = _mean_case(name, case, causal)
    assert not any(isinstance(e, Exception) for e in expected)
    backend = kernel
    if kernel.startswith("numba-"):  # force the generic or the counting kernels
        monkeypatch.setattr(backends, "counting_pays", lambda *a: kernel == "numba-counting")
        backend = "numba"
    got = evaluate_batch(MEAN_PROGRAMS[name], inputs, vocab=vocab, max_seq_len=max_seq_len,
                         causal=causal, backend=backend)
    for xs, g, e in zip(inputs, got, expected, strict=True):
        assert _bits(g) == _bits(e), f"input {xs}: got {g}, evaluate gives {e}"


def test_reported_mean_of_means_is_exact():
    """The reported case: 0.33333333333333337 (evaluate), not 0.3333333333333333."""
    program = MEAN_PROGRAMS["mean_of_spread_mean"]
    xs = [0, 0, 0, 2, 2, 1]
    want = evaluate(program, xs)
    assert want[4] == 0.33333333333333337
    for backend in ("numpy", "numba"):
        got = evaluate_batch(program, [xs], vocab=(0, 1, 2), max_seq_len=6, backend=backend)
        assert _bits(got[0]) == _bits(want)
