"""Verification throughput: `rasplang.verify` on make_sort_unique, exhaustively.

The target is every input of make_sort_unique over 5 tokens up to length 8
(488,280 sequences) in under 60 s on 2 cores. Parametrised over the length (the
domain grows 5x per step) and over the implementation: ``verify`` (batched interpreter
against the batched forward pass) versus ``loop`` (`rasplang.evaluate` and
``model.run`` one input at a time, what one would write by hand; small sizes only).
Run with ``pytest benchmarks/bench_verify.py --benchmark-only``.
"""

import itertools
import warnings

import pytest

import rasplang as rl
from rasplang.backend import CompilerWarning
from rasplang.lib import make_sort_unique

VOCAB = (1, 2, 3, 4, 5)


def domain(max_seq_len):
    return sum(len(VOCAB) ** n for n in range(1, max_seq_len + 1))


@pytest.fixture(scope="module")
def program():
    return make_sort_unique(rl.tokens, rl.tokens)


def compiled(program, max_seq_len):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        return rl.compile(program, VOCAB, max_seq_len)


@pytest.mark.parametrize("max_seq_len", [4, 6, 8])
def test_verify_exhaustive(benchmark, program, max_seq_len):
    """Batched exhaustive verification (the 60 s target is max_seq_len=8)."""
    model = compiled(program, max_seq_len)
    rl.verify(program, VOCAB, 2, model=model)  # warm-up: numba kernels, imports
    report = benchmark.pedantic(rl.verify, args=(program, VOCAB, max_seq_len),
                                kwargs={"model": model, "exhaustive": True},
                                rounds=1 if max_seq_len == 8 else 3, iterations=1)
    assert report.ok and report.checked == domain(max_seq_len)
    benchmark.extra_info["inputs"] = report.checked
    benchmark.extra_info["inputs_per_s"] = round(report.checked / report.seconds)


@pytest.mark.parametrize("max_seq_len", [4])
def test_loop_one_input_at_a_time(benchmark, program, max_seq_len):
    """The hand-written baseline: evaluate and model.run per input."""
    model = compiled(program, max_seq_len)
    inputs = [list(xs) for n in range(1, max_seq_len + 1)
              for xs in itertools.product(VOCAB, repeat=n)]

    def loop():
        bad = 0
        for xs in inputs:
            expected = rl.evaluate(program, xs)
            got = model.run([xs])[0]
            bad += any(g != e for g, e in zip(got, expected))
        return bad

    assert benchmark.pedantic(loop, rounds=1, iterations=1) == 0
    benchmark.extra_info["inputs"] = len(inputs)
