"""The table rules of `rasplang.tables`: their numpy fast paths against the functions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rasplang import Comparison, tokens
from rasplang.tables import (
    PRED_ERROR,
    RAISED_CODE,
    key_runs,
    linear_table,
    map_table,
    number_column,
    predicate_code,
    predicate_table,
)
from rasplang.values import Table, sorted_values, type_collisions, typed_key

NUMBERS = [0, 1, -1, 2, True, False, 0.0, -0.0, 0.5, -0.5, 1.0, 1 / 3, 2.0**-1074,
           float("inf"), float("-inf"), 2**40, 3.0]


def _same(a, b) -> bool:
    """The same typed value (NaN equals NaN here)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return typed_key(a) == typed_key(b)


@pytest.mark.parametrize("factors", [(1, -1), (2, 3), (1, 1), (0.5, -1), (True, 2), (-1, 0.0)])
def test_linear_table_types_every_sum_as_python_does(factors):
    """Each code of linear_table holds exactly ``a * x + b * y`` as Python computes it
    (type, sign of zero), and the merged view is sorted_values of the typed values."""
    rng = np.random.default_rng(len(str(factors)))
    for _ in range(30):
        xs = tuple({typed_key(v): v for v in rng.choice(np.array(NUMBERS, dtype=object),
                                                         size=6).tolist()}.values())
        ys = tuple({typed_key(v): v for v in rng.choice(np.array(NUMBERS, dtype=object),
                                                         size=5).tolist()}.values())
        a, b = factors
        out = linear_table(a, b, xs, ys, number_column(xs), number_column(ys))
        assert out is not None
        typed = out.table.values
        assert len({typed_key(v) for v in typed if v == v}) == len([v for v in typed if v == v])
        for (i, x), (j, y) in itertools.product(enumerate(xs), enumerate(ys)):
            assert _same(typed[out.codes[i, j]], a * x + b * y), (x, y)
        used = {typed_key(typed[c]) for c in out.codes.ravel().tolist()}
        assert used == {typed_key(v) for v in typed}  # no value that never occurs
        finite = [v for v in typed if v == v]
        assert [v for v in out.merged if v == v] == [v for v in sorted_values(finite)]
        assert {tuple(map(typed_key, g)) for g in out.collisions} == {
            tuple(map(typed_key, g)) for g in type_collisions(finite)}
        assert all(out.merged[m] == v or v != v for m, v in zip(out.merged_index, typed))


def test_linear_table_leaves_large_ints_to_the_general_path():
    """Ints whose sums could pass 2**53 are not computed in float64."""
    xs = (2**52, 1)
    assert linear_table(2, 1, xs, xs, number_column(xs), number_column(xs)) is None
    assert linear_table(1, 1, ("a",), (1,), number_column(("a",)), number_column((1,))) is None


@pytest.mark.parametrize("predicate", list(Comparison))
def test_comparison_tables_over_numbers_equal_calling_the_predicate(predicate):
    """The numpy comparison of two number columns is the predicate, pair by pair."""
    values = [v for v in NUMBERS if v == v]
    got = predicate_table(predicate, values, values[::-1], number_column(values),
                          number_column(values[::-1]))
    want = [[predicate_code(predicate, k, q) for q in values[::-1]] for k in values]
    assert got.tolist() == want


def test_predicate_table_marks_none_and_raising_pairs():
    """A None key or query, or a predicate that raises, is PRED_ERROR."""
    def pred(k, q):
        return k / q > 1

    table = predicate_table(pred, [None, 1, 2], [0, 1, None])
    assert table.tolist() == [[2, 2, 2], [2, 0, 2], [2, 1, 2]]
    assert (predicate_table(Comparison.TRUE, [None, "a"], ["b"]) == [[PRED_ERROR], [1]]).all()


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("const", [0, 0.5, -1, True, 2**53])
def test_elementwise_comparison_maps_equal_calling_f(op, const):
    """A Map ``x OP const`` over numbers is tabled with numpy, as calling f would."""
    node = {"==": tokens == const, "!=": tokens != const, "<": tokens < const,
            "<=": tokens <= const, ">": tokens > const, ">=": tokens >= const}[op]
    values = [v for v in NUMBERS if v == v]
    table, codes = map_table(node.f, values, lambda: number_column(values), [])
    assert [table.values[c] for c in codes.tolist()] == [node.f(v) for v in values]
    assert all(type(v) is bool for v in table.values)


def test_map_table_keeps_none_and_raised_apart():
    """None inputs give None without a call; f raising gives RAISED_CODE."""
    calls = []

    def f(x):
        calls.append(x)
        return 1 // x

    errors: list = []
    table, codes = map_table(f, [None, 0, 1, 2], lambda: None, errors)
    assert calls == [0, 1, 2]
    assert [table.values[c] if c != RAISED_CODE else "raised" for c in codes.tolist()] == [
        None, "raised", 1, 0]
    assert [arg for arg, _ in errors] == [(0,)]


def _reference_runs(pred):
    rows = np.zeros((pred.shape[1], pred.shape[0] + 2), dtype=np.int8)
    rows[:, 1:-1] = (pred == 1).T
    edges = np.diff(rows, axis=1)
    return np.argwhere(edges == 1), np.argwhere(edges == -1)


def test_key_runs_match_a_row_by_row_scan():
    """key_runs finds the runs a scan of each query's row finds, grouped by query."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        nk, nq = (int(n) for n in rng.integers(1, 12, size=2))
        pred = (rng.random((nk, nq)) < rng.random()).astype(np.int8)
        runs = key_runs(pred)
        starts, ends = _reference_runs(pred)
        assert runs.lo.tolist() == starts[:, 1].tolist()
        assert runs.hi.tolist() == ends[:, 1].tolist()
        assert np.diff(runs.ptr).tolist() == np.bincount(starts[:, 0], minlength=nq).tolist()
        if runs.point is not None:
            point = np.full(nq, -1)
            point[starts[:, 0]] = starts[:, 1]
            assert runs.point.tolist() == point.tolist()
    assert key_runs(np.array([[0, 2]], dtype=np.int8)) is None


def test_table_builds_its_index_on_first_use():
    """A table from distinct values looks codes up without a copy of its values."""
    table = Table((1, 1.0, True, -0.0, 0.0, "a"))
    assert table._index is None
    assert [table.code(v) for v in (1, 1.0, True, -0.0, 0.0, "a", 2)] == [0, 1, 2, 3, 4, 5, None]
    assert table.with_values([1.0]) is table
