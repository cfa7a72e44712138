"""Compiled models on the GPU: the forward pass with xp=cupy (skipped without a GPU)."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang.backend import CompilerWarning
from rasplang.lib import PROGRAMS

NAMES = ["hist", "reverse", "sort_unique", "frac_prevs", "shuffle_dyck2", "pair_balance"]


def _compile(name: str, n: int):
    entry = PROGRAMS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        return entry, rl.compile(entry.build(n), entry.vocab, n)


def _same(got, expected, tol):
    """Equal outputs; numbers within ``tol`` (numerical outputs decode to floats)."""
    for g_row, e_row in zip(got, expected):
        assert len(g_row) == len(e_row)
        for g, e in zip(g_row, e_row):
            if isinstance(e, numbers.Real) and isinstance(g, numbers.Real):
                assert abs(g - e) <= tol, (g, e)
            else:
                assert g == e, (g, e)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", NAMES)
def test_run_on_gpu_equals_numpy_and_program(name, dtype):
    """model.run(xp=cupy) equals model.run(xp=numpy) and the program on 2,000 inputs."""
    import cupy

    entry, model = _compile(name, 10)
    rng = np.random.default_rng(1)
    if name == "sort_unique":  # its domain: distinct tokens
        inputs = [list(rng.permutation(entry.vocab)[: rng.integers(1, len(entry.vocab) + 1)])
                  for _ in range(2000)]
    else:
        inputs = [[entry.vocab[i] for i in rng.integers(len(entry.vocab), size=rng.integers(1, 11))]
                  for _ in range(2000)]
    on_gpu = model.run(inputs, dtype=dtype, xp=cupy)
    on_cpu = model.run(inputs, dtype=dtype)
    _same(on_gpu, on_cpu, 1e-6)
    expected = [rl.evaluate(entry.build(10), x) for x in inputs]
    _same(on_gpu, expected, 1e-6 if dtype == np.float64 else 1e-4)


def test_apply_on_gpu_returns_gpu_arrays_with_same_values():
    """model.apply(xp=cupy) gives the same residual stream and logits as numpy."""
    import cupy

    entry, model = _compile("sort_unique", 5)
    tokens = [model.config.bos, *entry.example]
    gpu = model.apply(tokens, xp=cupy)
    cpu = model.apply(tokens)
    assert gpu.decoded == cpu.decoded
    np.testing.assert_allclose(cupy.asnumpy(cupy.asarray(gpu.logits)), np.asarray(cpu.logits),
                               atol=1e-9)
