"""The forward pass on CuPy stays in the dtype asked for (skipped without a GPU)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang.backend import CompilerWarning
from rasplang.backend.gelu import gelu_new
from rasplang.lib import PROGRAMS


@pytest.mark.parametrize("structured", [True, False], ids=["structured", "dense"])
@pytest.mark.parametrize("norm", [None, "layernorm"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_apply_on_cupy_keeps_float32(activation, norm, structured):
    """apply(xp=cupy, dtype=float32): every array it returns is float32, and its logits
    equal numpy's to float32 rounding."""
    import cupy

    entry = PROGRAMS["frac_prevs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        model = rl.compile(entry.build(5), entry.vocab, 5, causal=True, norm=norm,
                           activation=activation)
    seq = [model.config.bos, *entry.example[:5]]
    got = model.apply(seq, dtype=np.float32, xp=cupy, structured=structured)
    arrays = [got.logits, *got.residuals, *got.layer_outputs, *got.attention]
    assert {a.dtype for a in arrays} == {np.dtype(np.float32)}
    ref = model.apply(seq, dtype=np.float32, structured=structured)
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-5, atol=1e-5)


def test_gelu_new_on_cupy_keeps_float32():
    """gelu_new on a float32 CuPy array returns float32."""
    import cupy

    x = cupy.linspace(-30, 30, 101, dtype=cupy.float32)
    assert gelu_new(x, cupy).dtype == cupy.float32
