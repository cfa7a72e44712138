"""Every library program with exact LayerNorm (and GELU) against the interpreter: every
input up to length 5 and 2,000 inputs up to 16, in float64 and float32 (slow; torch is
not needed)."""

import numpy as np
import pytest

import rasplang as rl
from rasplang.lib import PROGRAMS

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::rasplang.backend.compiler.CompilerWarning")]


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_exhaustive_at_5(name, activation):
    """verify on every input of length 1..5, float64 and float32."""
    entry = PROGRAMS[name]
    n = min(5, entry.max_seq_len)
    model = rl.compile(entry.build(n), entry.vocab, n, norm="layernorm", activation=activation)
    assert not model.config.float64_only
    for dtype in (np.float64, np.float32):
        report = rl.verify(entry.build(n), entry.vocab, n, model=model, exhaustive=True,
                           dtype=dtype)
        assert report.ok, report


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_sampled_at_16(name):
    """verify on 2,000 seeded inputs up to length 16, float64 and float32."""
    entry = PROGRAMS[name]
    n = 16
    model = rl.compile(entry.build(n), entry.vocab, n, norm="layernorm")
    for dtype in (np.float64, np.float32):
        report = rl.verify(entry.build(n), entry.vocab, n, model=model, exhaustive=False,
                           samples=2000, dtype=dtype)
        assert report.ok, report
