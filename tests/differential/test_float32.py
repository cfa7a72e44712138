"""Float32: a model that claims float32 (empty ``float64_only``) is exact in float32 on
every input checked, at every batch size, through the structured and the dense forward;
otherwise ``float64_only`` names the node and why (`backend.chambers.float32`)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang import indices, lib, tokens
from rasplang.backend.chambers import attention, float32
from rasplang.backend.compiler import CompilerWarning
from rasplang.divergence import NUMERICAL_TOLERANCE32

VOCAB = tuple(range(6))


def _f1():
    """The running fraction of nonzero tokens (a numerical mean over ``<=``)."""
    prevs = rl.select(indices, indices, "<=")
    return rl.numerical(rl.aggregate(
        prevs, rl.numerical(rl.Map(lambda t: 1 if t != 0 else 0, tokens)), default=0))


def _mean_of_f1():
    """A numerical Aggregate of a numerical Aggregate."""
    return rl.numerical(rl.aggregate(rl.select(indices, indices, "<="), _f1(), default=0))


def _scaled_f1():
    """A running fraction read by a numerical Map with a large factor."""
    return rl.numerical(rl.Map(lambda x: 40 * x - 3, _f1()))


def _one_hot_read():
    """A lookup over one-hot conversions read as a number (its rounding residue)."""
    f3 = rl.numerical(rl.aggregate(rl.select(indices, indices, "true"),
                                   rl.numerical(rl.Map(lambda t: 3 * (t == 0) - 1, tokens)),
                                   default=0))
    v5 = rl.SequenceMap(lambda x, y: x < 0 or y < 0, f3, _f1())
    return rl.numerical(rl.Map(lambda x: 1 if x else 0, v5))


CASES = {"f1": _f1, "mean_of_f1": _mean_of_f1, "scaled_f1": _scaled_f1,
         "one_hot_read": _one_hot_read}


def _compile(program, vocab, n, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        return rl.compile(program, vocab, n, **kwargs)


def _exact_or_flagged(program, vocab, n, model, **verify):
    """float64_only names a node, or float32 verifies."""
    reason = model.config.float64_only
    if reason:
        assert "in float32" in reason and ":" in reason, reason
        with pytest.raises(ValueError, match="float64 only"):
            rl.verify(program, vocab, n, model=model, dtype=np.float32, samples=1,
                      exhaustive=False, progress=False)
        return
    report = rl.verify(program, vocab, n, model=model, dtype=np.float32, progress=False,
                       **verify)
    assert report.ok, report


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_cases_exhaustive_at_4(name, optimize):
    """Every input up to length 4 over 6 tokens: exact in float32, or flagged."""
    program = CASES[name]()
    model = _compile(program, VOCAB, 4, optimize=optimize)
    _exact_or_flagged(program, VOCAB, 4, model, exhaustive=True)


@pytest.mark.parametrize("n", [16, 32])
@pytest.mark.parametrize("name", ["f1", "scaled_f1", "one_hot_read"])
def test_cases_sampled(name, n):
    """300 sampled inputs at lengths 16 and 32: exact in float32, or flagged."""
    program = CASES[name]()
    model = _compile(program, VOCAB, n)
    _exact_or_flagged(program, VOCAB, n, model, samples=300, exhaustive=False)


def test_one_hot_read_as_a_number_is_float64_only():
    """A lookup's rounding residue read as a number is caught at compile time."""
    model = _compile(_one_hot_read(), VOCAB, 16)
    assert "the output may be off by" in model.config.float64_only


def test_running_fraction_claims_float32_at_32():
    """Equal logits stay equal: the running fraction is exact in float32 at 32."""
    model = _compile(_f1(), VOCAB, 32)
    assert not model.config.float64_only
    rng = np.random.default_rng(0)
    for _ in range(20):
        xs = rng.integers(0, 6, size=32).tolist()
        pattern = model.apply(["BOS", *xs], dtype=np.float32).attention[0][0, 0]  # (T, T)
        for q in range(1, 33):
            selected = pattern[q, 1:q + 1]
            assert selected.min() == selected.max()


def test_coldness_is_a_power_of_two():
    """Every head's coldness is a power of two (logits exact in float32)."""
    for n, scale, margin in ((5, 2.0, 0.5), (40, 80.0, 0.5), (16, 4 * 17 * 18, 1.0)):
        c = attention.coldness(n, scale, margin)
        assert math.log2(c) == int(math.log2(c))
        assert (n + 1) * math.exp(-c * margin) * scale <= attention.LEAKAGE_TARGET


def test_mean_bound_counts_the_selected_keys():
    """The float32 bound of a mean grows with the keys selected, not the length."""
    one = float32.mean_error32(1, 1.0, 0.0, 0.0, 0.0)
    many = float32.mean_error32(40, 1.0, 0.0, 0.0, 0.0)
    assert one < many < float32.mean_error32(80, 1.0, 0.0, 0.0, 0.0)
    assert float32.mean_error32(1, 1.0, 0.0, 0.0, 1e-3) > 2e-3  # drifting ties


@pytest.mark.parametrize("k", [2, 3, 7, 40, 100, 257, 1000])
def test_mean_bound_holds_for_a_chained_float32_sum(k):
    """A float32 mean of k values in [-1, 1], each weighted fl(1 / k) and added one after
    the other (the order with the most rounding), stays within the bound of k keys; so
    does a mean of k ones, where every partial sum is as large as it can be."""
    rng = np.random.default_rng(k)
    weight = np.float32(1.0) / np.float32(k)
    bound = float32.mean_error32(k, 1.0, 0.0, 0.0, 0.0)
    for values in (np.ones(k), rng.uniform(-1, 1, k), np.abs(rng.uniform(0.5, 1, k))):
        total = np.float32(0.0)
        for v in values.astype(np.float32):
            total = np.float32(total + np.float32(weight * v))
        exact = float(values.astype(np.float32).astype(np.float64).mean())
        assert abs(float(total) - exact) <= bound


def _decode_close(got, want, numerical):
    if not numerical:
        return got == want
    return all((g is None) == (w is None) and (w is None or abs(g - w) <= NUMERICAL_TOLERANCE32
               * max(1.0, abs(w))) for g, w in zip(got, want))


BATCH_PROGRAMS = [("f1", VOCAB, 16), ("one_hot_read", VOCAB, 5), ("frac_prevs", None, 16),
                  ("sort", None, 8), ("shuffle_dyck2", None, 8), ("pair_balance", None, 16)]


@pytest.mark.parametrize("name,vocab,n", BATCH_PROGRAMS)
def test_every_batch_size_and_path(name, vocab, n):
    """The same 256 inputs in float32 at batch sizes 1, 64 and 256, structured and dense,
    all agree with evaluate (where the model claims float32)."""
    if name in CASES:
        program = CASES[name]()
    else:
        program, vocab = lib.PROGRAMS[name].build(n), lib.PROGRAMS[name].vocab
    model = _compile(program, vocab, n)
    if model.config.float64_only:
        pytest.skip(f"float64 only: {model.config.float64_only}")
    rng = np.random.default_rng(1)
    vocab = list(vocab)
    xs = [[vocab[i] for i in rng.integers(0, len(vocab), size=rng.integers(1, n + 1))]
          for _ in range(256)]
    want = [rl.evaluate(program, x) for x in xs]
    numerical = model.config.output_encoding == "numerical"
    for structured in (True, False):
        for chunk in (1, 64, 256):
            got = model.run(xs[:32] if chunk == 1 else xs, dtype=np.float32, chunk=chunk,
                            structured=structured)
            for g, w in zip(got, want):
                assert _decode_close(g, w, numerical), (structured, chunk, g, w)


@pytest.mark.parametrize("optimize", [True, False])
def test_mean_under_a_negated_select_is_exact_or_float64_only(optimize):
    """A mean under ``~Select(indices, n - 1 - i, ==)`` (a fuzz case): the query's one-hot
    comes from an MLP, so the selected keys' logits need not tie in float32; the model is
    float64-only or exact in float32 on every input, never wrong."""
    vocab = ["a", "b", "c"]
    n1 = rl.numerical(rl.Map(lambda x: ord(x) - 97, rl.tokens))
    opposite = rl.SequenceMap(lambda i, n: n - 1 - i, rl.indices, rl.length)
    program = rl.numerical(rl.Aggregate(~rl.Select(rl.indices, opposite, rl.Comparison.EQ),
                                        n1, default=0))
    model = rl.compile(program, vocab, 4, optimize=optimize)
    assert rl.verify(program, vocab, 4, model=model, exhaustive=True).ok
    if not model.config.float64_only:
        report = rl.verify(program, vocab, 4, model=model, exhaustive=True, dtype=np.float32)
        assert report.ok, report.summary()


def _halves():
    """An affine map of two lookups whose values are halves: exact float32 sums."""
    a = rl.numerical(rl.Map(lambda i: i + 1, indices))
    b = rl.numerical(rl.Map(lambda t: t + 0.5, tokens))
    return rl.numerical(rl.LinearSequenceMap(a, b, -2, 3))


def _lookup_of_a_copy():
    """A categorical Aggregate (a mean of equal one-hots) read by a numerical lookup."""
    same = rl.aggregate(rl.select(tokens, tokens, "=="), tokens)  # the selected keys agree
    return rl.numerical(rl.Map(lambda t: t > 2, rl.Map(lambda t: t % 3 + t // 2, same)))


def _steps_then_mean():
    """A discretised sum of integers (exact steps) as the query of a numerical mean."""
    both = rl.SequenceMap(lambda t, i: t + i, tokens, indices)
    return rl.numerical(rl.aggregate(rl.select(tokens, both, "<"),
                                     rl.numerical(rl.Map(lambda t: t == 0, tokens)),
                                     default=0))


@pytest.mark.parametrize("make", [_halves, _lookup_of_a_copy, _steps_then_mean])
@pytest.mark.parametrize("optimize", [True, False])
def test_exact_arithmetic_claims_float32(make, optimize):
    """Sums of dyadic numbers (halves) and lookups of a copied one-hot are exact or
    near exact in float32: the model claims float32 and float32 verifies on every input."""
    program = make()
    model = _compile(program, VOCAB[:5], 5, optimize=optimize)
    assert model.config.float64_only == ""
    report = rl.verify(program, VOCAB[:5], 5, model=model, dtype=np.float32, progress=False)
    assert report.ok, report.summary()


def test_grid():
    """The coarsest power of two of which a number is a multiple."""
    got = float32.grid(np.array([0.75, 3.0, 4.0, 1.5, 2.0 ** -30, 0.0, math.inf, 0.1]))
    assert got[:5].tolist() == [-2.0, 0.0, 2.0, -1.0, -30.0]
    assert got[5] == math.inf and got[6] == -math.inf
    assert got[7] < -50  # 0.1 is a multiple of a tiny power of two only
    # a sum of multiples of 2^q is exact while the magnitudes sum to less than 2^(24 + q)
    assert float32.exact_below(np.array([2.0 ** 22, 2.0 ** 23]), np.array([-1.0, -1.0])
                               ).tolist() == [True, False]
