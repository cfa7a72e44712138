"""The CuPy backend against evaluate and against numba (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

import rasplang as rl
from rasplang import lib
from rasplang.interpreter import Plan, evaluate_batch
from rasplang.lib import PROGRAMS
from rasplang.testing import assert_batch_matches_oracle, oracle_outputs, random_program


def _backends():
    from rasplang.interpreter.kernels_cupy import CupyBackend

    return {"fused": CupyBackend(fused=True), "array": CupyBackend(fused=False)}


@pytest.mark.parametrize("kind", ["fused", "array"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_library_programs_on_gpu(name, causal, kind):
    """Every library program on 300 random inputs up to length 16 equals evaluate."""
    entry = PROGRAMS[name]
    program = entry.build(16)
    rng = np.random.default_rng(len(name))
    inputs = [[entry.vocab[i] for i in rng.integers(len(entry.vocab), size=rng.integers(0, 17))]
              for _ in range(300)]
    expected = oracle_outputs(program, inputs, causal)
    backend = _backends()[kind]

    def run(xs):
        return evaluate_batch(program, xs, vocab=entry.vocab, max_seq_len=16, causal=causal,
                              backend=backend)

    assert_batch_matches_oracle(run, inputs, expected)


@pytest.mark.parametrize("kind", ["fused", "array"])
def test_random_programs_on_gpu(kind):
    """300 random programs (depth up to 8) give evaluate's outputs or first error."""
    backend = _backends()[kind]
    for seed in range(300):
        rng = np.random.default_rng(seed)
        vocab = [("a", "b", "c"), (1, 2, 3)][seed % 2]
        program = random_program(rng, vocab=vocab, max_depth=int(rng.integers(1, 9)),
                                 compilable=seed % 3 == 0)
        causal = bool(seed % 2)
        inputs = [[vocab[i] for i in rng.integers(3, size=rng.integers(0, 7))]
                  for _ in range(40)]
        expected = oracle_outputs(program, inputs, causal)

        def run(xs, program=program, vocab=vocab, causal=causal):
            return evaluate_batch(program, xs, vocab=vocab, max_seq_len=6, causal=causal,
                                  backend=backend)

        try:
            assert_batch_matches_oracle(run, inputs, expected)
        except rl.AnalysisError:
            continue
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc


def test_large_batch_matches_numba():
    """100,000 sequences of length 64 (make_sort_unique): CuPy equals numba code for code."""
    plan = Plan(lib.make_sort_unique(rl.tokens, rl.tokens), range(64), 64)
    rng = np.random.default_rng(0)
    codes = np.argsort(rng.random((100_000, 64)), axis=1).astype(np.int32)
    lengths = rng.integers(0, 65, size=100_000)
    gpu = plan.run_arrays(codes, lengths, backend="cupy").output
    cpu = plan.run_arrays(codes, lengths, backend="numba").output
    np.testing.assert_array_equal(gpu.codes, cpu.codes)
    assert gpu.table == cpu.table


def test_gpu_error_names_first_offending_input():
    """Several different strings under one Aggregate raise evaluate's error on the GPU."""
    prog = rl.Aggregate(rl.select(rl.tokens, rl.tokens, "true"), rl.tokens).named("agg")
    with pytest.raises(rl.EvaluationError, match="input 1 of the batch"):
        evaluate_batch(prog, [["a", "a"], ["a", "b"]], vocab="ab", max_seq_len=2,
                       backend="cupy")
