"""Value tables, exact means and selector programs of the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from rasplang import Comparison, Select, indices, tokens
from rasplang.evaluator import mean
from rasplang.interpreter.selectors import AND, NOT, OR, SELECT, compile_selector
from rasplang.interpreter.tables import Table, numeric_info, typed_key


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


@pytest.mark.parametrize("values", [
    [0, 1], [0, 1, 2, 7], [True, False, 3], [0.5, 0.25, 1, -3], [2**40, 1, 0.125],
])
def test_scaled_integer_means_equal_evaluators_mean(values):
    """The kernels' integer-sum mean is bit-identical to evaluator.mean on many multisets."""
    table = Table.of(values)
    info = numeric_info(table, max_seq_len=16)
    assert info.exact
    rng = np.random.default_rng(0)
    for _ in range(500):
        codes = rng.integers(len(table), size=int(rng.integers(2, 17))).tolist()
        assert _kernel_mean(info, codes) == mean([table.values[c] for c in codes])


def test_non_dyadic_or_huge_numbers_are_not_exact():
    """Thirds and integers near 2**53 cannot use the exact path."""
    assert not numeric_info(Table.of([1 / 3, 0]), 8).exact
    assert not numeric_info(Table.of([2**52, 1]), 8).exact
    info = numeric_info(Table.of(["a", None, 2]), 8)
    assert info.exact and info.isnum.tolist() == [0, 0, 1]


def test_compile_selector_shares_sub_selectors():
    """A shared sub-selector is one register; ops come children first."""
    a = Select(tokens, tokens, Comparison.EQ)
    b = Select(indices, indices, Comparison.LT)
    both = a & b
    prog = compile_selector((both | ~both) & a)
    assert prog.ops.tolist() == [SELECT, SELECT, AND, NOT, OR, AND]
    assert len(prog.leaves) == 2
    assert prog.a0.tolist()[2:] == [0, 2, 2, 4]
