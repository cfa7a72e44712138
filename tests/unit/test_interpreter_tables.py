"""Value tables, exact means and selector programs of the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from rasplang import Comparison, Select, indices, tokens
from rasplang.evaluator import mean
from rasplang.interpreter.selectors import AND, NOT, OR, SELECT, compile_selector
from rasplang.interpreter.tables import Table, exact_means, numeric_info, typed_key


def test_table_keeps_one_true_and_one_point_zero_apart():
    """1, 1.0 and True get three codes (the analysis merges them; evaluate does not)."""
    table = Table.of([1, 1.0, True, 1, "1"])
    assert table.values == (1, 1.0, True, "1")
    assert [table.code(v) for v in (1, 1.0, True, "1", 2)] == [0, 1, 2, 3, None]
    assert typed_key(True) != typed_key(1)


def test_table_with_values_returns_same_object_when_nothing_is_new():
    """Extending with known values returns the same table; new ones give a copy."""
    table = Table.of(["a", "b"])
    assert table.with_values(["b", "a"]) is table
    longer = table.with_values(["c"])
    assert longer.values == ("a", "b", "c") and table.values == ("a", "b")


def _kernel_mean(info, codes):
    total = int(sum(int(info.num[c]) for c in codes))
    return np.float64(total) / np.float64(len(codes) * info.denom)


def _limb_sums(info, codes):
    """``acc`` row of a kernel that selected ``codes``: count and the two limb sums."""
    return [len(codes), sum(int(info.high[c]) for c in codes),
            sum(int(info.low[c]) for c in codes)]


@pytest.mark.parametrize("values", [
    [0, 1], [0, 1, 2, 7], [True, False, 3], [0.5, 0.25, 1, -3], [2**40, 1, 0.125],
])
def test_scaled_integer_means_equal_evaluators_mean(values):
    """The kernels' integer-sum mean is bit-identical to evaluator.mean on many multisets."""
    table = Table.of(values)
    info = numeric_info(table, max_seq_len=16)
    assert info.exact and info.fast
    rng = np.random.default_rng(0)
    for _ in range(500):
        codes = rng.integers(len(table), size=int(rng.integers(2, 17))).tolist()
        assert _kernel_mean(info, codes) == mean([table.values[c] for c in codes])


@pytest.mark.parametrize("values", [
    [1 / 3, 0, 2 / 3, 1], [0.1, 0.2, 0.7, -5.5], [2**52, 1, 0.5], [1e-5, 1e5, 3 / 7],
    [0.3333333333333333, 0.33333333333333337, 0.5, 1 / 6, 0.0, 1],  # means of means
    [-(2**-1074), 0.0, -0.0, 2**-1074],  # subnormals; a mean may round to -0.0
])
def test_limb_sums_give_evaluators_mean_bit_for_bit(values):
    """Floats of any denominator sum exactly in two limbs; `exact_means` rounds once,
    giving evaluator.mean's float bit for bit (sign of zero included)."""
    table = Table.of(values)
    info = numeric_info(table, max_seq_len=16)
    assert info.exact
    rng = np.random.default_rng(1)
    picks = [rng.integers(len(table), size=int(rng.integers(2, 17))).tolist()
             for _ in range(500)]
    got = exact_means(np.array([_limb_sums(info, codes) for codes in picks]), info)
    for codes, m in zip(picks, got.tolist()):
        want = mean([table.values[c] for c in codes])
        assert m.hex() == want.hex(), (codes, m, want)


def test_fast_path_needs_small_scaled_integers():
    """Thirds and integers near 2**53 are exact (two limbs) but not divided in a kernel;
    infinities and NaN have no exact form; strings and None are not numbers."""
    for values in ([1 / 3, 0], [2**52, 1]):
        info = numeric_info(Table.of(values), 8)
        assert info.exact and not info.fast and info.kernel_denom == 1
    assert not numeric_info(Table.of([1.0, float("inf")]), 8).exact
    assert not numeric_info(Table.of([1.0, float("nan")]), 8).exact
    assert not numeric_info(Table.of([1e-300, 1e300]), 8).exact  # too wide for two limbs
    info = numeric_info(Table.of(["a", None, 2]), 8)
    assert info.exact and info.fast and info.kind.tolist() == [0, 0, 1]


def test_table_keeps_minus_zero_apart_from_zero():
    """-0.0 == 0.0, but evaluate returns whichever f gave, so they get two codes."""
    table = Table.of([0.0, -0.0, 0])
    assert [repr(v) for v in table.values] == ["0.0", "-0.0", "0"]
    assert table.code(-0.0) == 1 and typed_key(-0.0) != typed_key(0.0)


def test_compile_selector_shares_sub_selectors():
    """A shared sub-selector is one register; ops come children first."""
    a = Select(tokens, tokens, Comparison.EQ)
    b = Select(indices, indices, Comparison.LT)
    both = a & b
    prog = compile_selector((both | ~both) & a)
    assert prog.ops.tolist() == [SELECT, SELECT, AND, NOT, OR, AND]
    assert len(prog.leaves) == 2
    assert prog.a0.tolist()[2:] == [0, 2, 2, 4]
