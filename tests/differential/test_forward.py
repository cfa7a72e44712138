"""The structured forward pass (`rasplang.backend.structured`) against the dense reference
forward (`rasplang.backend.forward`): logits, decoded outputs, residuals, sublayer outputs,
attention patterns and attention logits, on every library program, random programs,
causal and None-producing programs, in float64 and float32, with the numba kernels and
with the array path that CuPy takes.

"Equal" means equal to float rounding: in float64 within 1e-9 of the largest magnitude;
in float32, no farther from the float64 dense forward than twice the float32 dense
forward is (plus 1e-5), since the dense float32 forward's own rounding, summing many
zeros against large discretisation weights, is the larger one. Decoded categorical
outputs and None are compared exactly, at every real (non-PAD) position."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang import lib
from rasplang.backend import CompilerWarning, compile
from rasplang.backend.forward import forward as dense_forward
from rasplang.backend.structured import forward as structured_forward
from rasplang.testing import random_program

KERNELS = ("numba", "arrays")
TRACE = ("residuals", "layer_outputs", "attention", "attn_logits")


def compiled(program, vocab, max_seq_len, causal=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        return compile(program, vocab, max_seq_len, causal=causal)


def random_ids(model, rng, batch=48):
    """``[batch, 1 + max_seq_len]`` ids: BOS, random tokens of random lengths 0..max, PAD."""
    cfg = model.config
    ids = np.full((batch, cfg.max_seq_len + 1), cfg.pad_id, dtype=np.int64)
    ids[:, 0] = model.input_encoder.bos_id
    lengths = rng.integers(0, cfg.max_seq_len + 1, batch)
    lengths[0] = cfg.max_seq_len
    for b, n in enumerate(lengths):
        ids[b, 1:n + 1] = rng.integers(0, len(cfg.vocab), n)
    return ids, lengths


def dense(model, ids, dtype, keep=True):
    return dense_forward(model._weights_for(np, dtype, trim=not keep), model.config, ids, np,
                         keep=keep)


def assert_close(got, ref, ref64, dtype, what):
    """``got`` equals the dense ``ref`` (same dtype) to float rounding; ``ref64`` is the
    dense float64 result."""
    assert got.shape == ref.shape, what
    hidden = np.isneginf(ref64)
    assert (np.isneginf(got) == hidden).all(), f"{what}: masked entries differ"
    got, ref, ref64 = (np.where(hidden, 0, a).astype(np.float64) for a in (got, ref, ref64))
    scale = 1 + np.abs(ref64).max(initial=0)
    if dtype == np.float64:
        err, bound = np.abs(got - ref).max(initial=0), 1e-9 * scale
    else:
        # A discretising MLP multiplies rounding by its slope (mlp_exactness / gap, 10^4
        # for gaps of 10^-2), so an output it writes directly carries up to ~10^-4 in
        # float32 whatever the summation order; decoded values are compared exactly
        # (assert_same_decoded).
        err = np.abs(got - ref64).max(initial=0)
        bound = 2 * np.abs(ref - ref64).max(initial=0) + 1e-4 * scale
    assert err <= bound, f"{what}: {err:.3g} > {bound:.3g}"


def assert_same_decoded(model, got, ref, lengths, dtype, what):
    """Decoded outputs agree at every real position: categorical values and None exactly,
    numbers to float rounding."""
    decode = model.output_encoder.decode
    g, r = decode(got[:, 1:]), decode(ref[:, 1:])
    tol = 1e-9 if dtype == np.float64 else 1e-4
    for b, n in enumerate(lengths):
        for a, e in zip(g[b, :n], r[b, :n]):
            if model.config.output_encoding == "numerical" and e is not None:
                assert a is not None and abs(a - e) <= tol * max(1.0, abs(e)), (what, b, a, e)
            else:
                assert a == e or (a is None and e is None), (what, b, a, e)


def check(model, seed=0, kernels=KERNELS):
    """The structured forward equals the dense one on random ids, every output and trace."""
    ids, lengths = random_ids(model, np.random.default_rng(seed))
    ref64_logits, ref64 = dense(model, ids, np.float64)
    dtypes = (np.float64,) if model.config.float64_only else (np.float64, np.float32)
    for dtype in dtypes:
        ref_logits, ref = dense(model, ids, dtype)
        structure = model._structure(np, dtype)
        for k in kernels:
            what = f"{np.dtype(dtype).name} {k}"
            logits, trace = structured_forward(structure, ids, np, keep=True, kernels=k)
            assert_close(logits, ref_logits, ref64_logits, dtype, f"{what} logits")
            for name in TRACE:
                assert len(trace[name]) == len(ref[name]), name
                for i, (a, r, r64) in enumerate(zip(trace[name], ref[name], ref64[name])):
                    assert_close(a, r, r64, dtype, f"{what} {name}[{i}]")
            plain, _ = structured_forward(structure, ids, np, kernels=k)   # run mode
            assert_close(plain, ref_logits, ref64_logits, dtype, f"{what} logits, no trace")
            assert_same_decoded(model, plain, ref_logits, lengths, dtype, what)


@pytest.mark.parametrize("name", list(lib.PROGRAMS))
def test_library_program(name):
    """Every library program at its default length: structured == dense."""
    entry = lib.PROGRAMS[name]
    check(compiled(entry.build(entry.max_seq_len), entry.vocab, entry.max_seq_len))


@pytest.mark.parametrize("name", list(lib.PROGRAMS))
def test_library_program_longer(name):
    """Every library program at length 12 (larger heads, tables and MLPs)."""
    entry = lib.PROGRAMS[name]
    check(compiled(entry.build(12), entry.vocab, 12), seed=1, kernels=("numba",))


@pytest.mark.parametrize("name", [n for n, e in lib.PROGRAMS.items() if e.causal_safe])
def test_causal_library_program(name):
    """Causally masked models: structured == dense."""
    entry = lib.PROGRAMS[name]
    check(compiled(entry.build(entry.max_seq_len), entry.vocab, entry.max_seq_len, causal=True))


def test_none_producing_programs():
    """Programs whose outputs include None (categorical and numerical None flags)."""
    for name, vocab in (("sort_unique", (1, 2, 3)), ("prev_sum", (1, 2, 3)),
                        ("shift_by", tuple("abc"))):
        entry = lib.PROGRAMS[name]
        model = compiled(entry.build(6), vocab, 6)
        ids, lengths = random_ids(model, np.random.default_rng(2))
        logits, _ = dense(model, ids, np.float64, keep=False)
        decoded = model.output_encoder.decode(logits[:, 1:])
        assert any(v is None for b, n in enumerate(lengths) for v in decoded[b, :n]), name
        check(model, seed=2)


@pytest.mark.parametrize("seed", range(40))
def test_random_program(seed):
    """Random programs (tracr's subset and beyond), causal unless they use ``length``
    (which a causal model refuses): structured == dense."""
    rng = np.random.default_rng(seed)
    vocab = [1, 2, 3] if seed % 2 else ["a", "b", "c"]
    program = random_program(rng, vocab=vocab, max_depth=4, compilable=seed % 4 != 3)
    causal = seed % 3 == 0 and not any(isinstance(n, rl.LengthType)
                                       for n in rl.topological_order(program))
    try:
        model = compiled(program, vocab, 5, causal=causal)
    except (rl.UnsupportedProgramError, rl.AnalysisError):
        pytest.skip("refused by the compiler")
    check(model, seed=seed)
