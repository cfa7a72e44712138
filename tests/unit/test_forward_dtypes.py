"""Forward passes stay in the dtype asked for, and every path (dense, structured with
array operations, structured with the numba kernels a large batch takes) gives the
program's outputs in float32 at every batch size."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang import lib
from rasplang.backend import CompilerWarning, structured
from rasplang.backend.gelu import gelu_new
from rasplang.divergence import NUMERICAL_TOLERANCE32


def _compiled(name, causal=False, n=5, **kwargs):
    entry = lib.PROGRAMS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        return entry, rl.compile(entry.build(n), entry.vocab, n, causal=causal, **kwargs)


def _arrays(result):
    """Every array `apply` returns, named."""
    named = [("logits", result.logits)]
    for name in ("residuals", "layer_outputs", "attention", "attn_logits"):
        named += [(f"{name}[{i}]", a) for i, a in enumerate(getattr(result, name))]
    return named


def _ids(model, n_batch, seed=0):
    """``n_batch`` random sequences of every length up to max_seq_len, BOS first, padded."""
    cfg = model.config
    rng = np.random.default_rng(seed)
    ids = np.full((n_batch, cfg.max_seq_len + 1), cfg.pad_id, dtype=np.int64)
    ids[:, 0] = model.input_encoder.bos_id
    for b, n in enumerate(rng.integers(1, cfg.max_seq_len + 1, n_batch)):
        ids[b, 1:n + 1] = rng.integers(0, len(cfg.vocab), n)
    return ids


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_new_keeps_the_dtype(dtype):
    """gelu_new returns its input's dtype (its constants do not promote float32)."""
    x = np.linspace(-30, 30, 101).astype(dtype)
    got = gelu_new(x)
    assert got.dtype == dtype
    want = gelu_new(x.astype(np.float64))
    ulps = 1e-6 if dtype == np.float32 else 1e-15  # 1 + tanh cancels: a few ulps of |x|
    assert np.all(np.abs(got - want) <= ulps * np.abs(x))
    np.testing.assert_array_equal(got[np.abs(x) >= 12], np.maximum(x[np.abs(x) >= 12], 0))


@pytest.mark.parametrize("structured_", [True, False], ids=["structured", "dense"])
@pytest.mark.parametrize("norm", [None, "layernorm", "rmsnorm"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_apply_returns_every_array_in_the_dtype_asked(activation, norm, structured_):
    """apply's logits, residuals, sublayer outputs, patterns and scores are all float32
    when float32 is asked (float64 otherwise), and decode to the program's outputs."""
    entry, model = _compiled("frac_prevs", causal=True, activation=activation, norm=norm)
    seq = [model.config.bos, *entry.example[:5]]
    want = rl.evaluate(model.program, seq[1:], causal=True)
    for dtype in (np.float32, np.float64):
        result = model.apply(seq, dtype=dtype, structured=structured_)
        wrong = [(name, a.dtype) for name, a in _arrays(result) if a.dtype != dtype]
        assert not wrong, f"{np.dtype(dtype).name} asked, got {wrong}"
        np.testing.assert_allclose(np.asarray(result.decoded[1:], dtype=float),
                                   np.asarray(want, dtype=float), atol=NUMERICAL_TOLERANCE32)


@pytest.mark.parametrize("kernels", ["arrays", "numba"])
def test_structured_paths_keep_float32(kernels):
    """The structured forward's array path and numba kernels keep float32 in every traced
    array, with and without the trace, and when a large batch is split over threads."""
    _, model = _compiled("sort_unique")
    s = model._structure(np, np.float32)
    ids = _ids(model, 40)
    logits, trace = structured.forward(s, ids, np, keep=True, kernels=kernels)
    arrays = [("logits", logits)] + [(f"{k}[{i}]", a) for k, v in trace.items()
                                     for i, a in enumerate(v)]
    assert trace["residuals"] and trace["attention"]
    assert not [(name, a.dtype) for name, a in arrays if a.dtype != np.float32]
    plain, _ = structured.forward(s, ids, np, kernels=kernels)
    split, _ = structured.forward(s, _ids(model, 4096), np, kernels=kernels, threads=2)
    assert plain.dtype == split.dtype == np.float32


def _expected(program, batch, causal):
    return [rl.evaluate(program, xs, causal=causal) for xs in batch]


def _agree(got, want, numerical):
    """Outputs equal the program's (numerical within the float32 tolerance)."""
    if not numerical:
        return got == want
    return all((g is None) == (w is None) and (g is None or abs(g - float(w))
               <= NUMERICAL_TOLERANCE32 * max(1.0, abs(float(w))))
               for gs, ws in zip(got, want) for g, w in zip(gs, ws, strict=True))


@pytest.mark.parametrize("structured_", [True, False], ids=["structured", "dense"])
@pytest.mark.parametrize(("name", "causal"), [("frac_prevs", True), ("sort_unique", False),
                                              ("hist", False), ("shuffle_dyck2", False),
                                              ("reverse", True)])
def test_float32_at_batch_sizes_1_64_256(name, causal, structured_):
    """The same 256 inputs in float32, run one at a time, 64 at a time (array operations)
    and 256 at once (from 1,024 positions on, the numba kernels), give the program's
    outputs, and logits that agree with each other to float32 rounding."""
    entry, model = _compiled(name, causal=causal)
    ids = _ids(model, 256)
    pad = model.config.pad_id
    batch = [[entry.vocab[i] for i in row[1:] if i != pad] for row in ids.tolist()]
    want = _expected(model.program, batch, causal)
    numerical = model.output_encoder.numerical
    logits = {}
    for size in (1, 64, 256):
        parts = [model.forward(ids[i:i + size], dtype=np.float32, structured=structured_)
                 for i in range(0, len(ids), size)]
        logits[size] = np.concatenate(parts)
        assert logits[size].dtype == np.float32
        got = list(itertools.chain.from_iterable(
            model.run(batch[i:i + size], dtype=np.float32, structured=structured_)
            for i in range(0, len(batch), size)))
        assert _agree(got, want, numerical), f"batch size {size}"
    for size in (64, 256):
        np.testing.assert_allclose(logits[size], logits[1], rtol=1e-5, atol=1e-5)
