"""The structured forward on CuPy (the array path): equal to the dense forward on CuPy and
to the structured forward on numpy (skipped without a GPU)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang.backend import CompilerWarning
from rasplang.lib import PROGRAMS

NAMES = ["hist", "sort", "shuffle_dyck2", "frac_prevs", "dyck2"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", NAMES)
def test_structured_on_gpu_equals_dense(name, dtype):
    """forward(xp=cupy): structured == dense on the GPU == structured on the CPU."""
    import cupy

    entry = PROGRAMS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        model = rl.compile(entry.build(10), entry.vocab, 10)
    rng = np.random.default_rng(0)
    ids = np.full((300, 11), model.config.pad_id, dtype=np.int64)
    ids[:, 0] = model.input_encoder.bos_id
    for b, n in enumerate(rng.integers(0, 11, 300)):
        ids[b, 1:n + 1] = rng.integers(0, len(entry.vocab), n)
    gpu = model.forward(cupy.asarray(ids), dtype=dtype, xp=cupy)
    assert isinstance(gpu, cupy.ndarray)
    dense = model.forward(cupy.asarray(ids), dtype=dtype, xp=cupy, structured=False)
    cpu = model.forward(ids, dtype=dtype)
    tol = 1e-9 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(gpu.get(), dense.get(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gpu.get(), cpu, rtol=tol, atol=tol)


def test_apply_on_gpu_keeps_every_array():
    """apply(xp=cupy) through the structured forward: the dense forward's arrays."""
    import cupy

    entry = PROGRAMS["sort_unique"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        model = rl.compile(entry.build(5), entry.vocab, 5)
    tokens = [model.config.bos, 3, 1, 5, 2]
    got = model.apply(tokens, xp=cupy)
    ref = model.apply(tokens, structured=False)
    assert got.decoded == ref.decoded
    for name in ("residuals", "layer_outputs", "attention", "attn_logits"):
        for a, r in zip(getattr(got, name), getattr(ref, name), strict=True):
            np.testing.assert_allclose(a, r, rtol=1e-9, atol=1e-9)
