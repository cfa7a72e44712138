"""Random programs with exact LayerNorm and GELU: wherever the plain model is exact, the
normalised one is too, in float64 and float32."""

import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang.testing import random_program
from rasplang.validation import UnsupportedProgramError


@pytest.mark.parametrize("seed", range(3))
def test_random_programs_stay_exact_with_layernorm_and_gelu(seed):
    """20 random programs per seed: verify (every input up to 4) in both dtypes."""
    rng = np.random.default_rng(seed)
    checked = 0
    for i in range(20):
        program = random_program(rng, vocab=[1, 2, 3], max_depth=4, compilable=bool(i % 2))
        causal = bool(rng.integers(2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                plain = rl.compile(program, [1, 2, 3], 4, causal=causal)
            except (UnsupportedProgramError, ValueError):
                continue
            if not rl.verify(program, [1, 2, 3], 4, model=plain, causal=causal).ok:
                continue  # a categorical mean the compiler warned about
            model = rl.compile(program, [1, 2, 3], 4, causal=causal, norm="layernorm",
                               activation="gelu" if i % 3 else "relu")
        for dtype in ("float64", "float32")[: 1 if plain.config.float64_only else 2]:
            report = rl.verify(program, [1, 2, 3], 4, model=model, causal=causal, dtype=dtype)
            assert report.ok, (i, dtype, report)
        checked += 1
    assert checked >= 5
