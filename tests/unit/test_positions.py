"""Per-cell value sets (`rasplang.positions`): exact where values depend only on
positions, refined by the cells elsewhere, and the pieces they are built from."""

from __future__ import annotations

import warnings

import numpy as np

import rasplang as rl
from rasplang import Aggregate, Comparison, Select, SelectorWidth, indices, length, lib, tokens
from rasplang.evaluator import EvaluationError
from rasplang.inference import MAX_CELL_LENGTH
from rasplang.positions import Cells, _expanded, from_codes, from_rows


def _mean_ge():
    return rl.numerical(Aggregate(Select(indices, indices, Comparison.GEQ), indices))


def test_cells_are_every_length_and_position():
    """Cells run over lengths 1..N and positions below each, in order."""
    cells = Cells.of(4)
    assert list(zip(cells.n.tolist(), cells.i.tolist())) == [
        (n, i) for n in range(1, 5) for i in range(n)]
    assert cells.cell(3, 2) == 5 and cells.key_cell[5].tolist() == [3, 4, 5, 0]


def _mean_ge_values(max_seq_len):
    """The typed values of `_mean_ge` on every input: its index where the query is the
    last position (one key), else the mean of indices i..n-1 (a float)."""
    return {(type(v), v) for n in range(1, max_seq_len + 1) for i in range(n)
            for v in (i if i == n - 1 else (i + n - 1) / 2, i)}


def test_position_only_mean_is_exact_per_cell():
    """mean(select(indices, indices, >=), indices) is (i + n - 1) / 2 at each cell (i
    itself causally), and its table is those values and its input's: no default, since
    every query selects its own position."""
    mean = _mean_ge()
    analysis = rl.analyze(mean, "a", 8)
    for n in range(1, 9):
        for i in range(n):
            want = i if i == n - 1 else (i + n - 1) / 2
            got = analysis.cell_values(mean, n, i)
            assert len(got) == 1 and got[0] == want and type(got[0]) is type(want)
            assert analysis.cell_values(mean, n, i, causal=True) == (i,)
    assert {(type(v), v) for v in analysis.typed_values[mean]} == _mean_ge_values(8)


def test_default_kept_where_a_query_can_select_nothing():
    """A mean under ``>`` (the last position selects no key) keeps its default; under
    ``>=`` it has none (every query selects itself)."""
    gt = rl.numerical(Aggregate(Select(indices, indices, Comparison.GT), indices,
                                default=None))
    ge = _mean_ge()
    assert None in rl.analyze(gt, "a", 6).typed_values[gt]
    assert None not in rl.analyze(ge, "a", 6).typed_values[ge]


def test_position_only_program_compiles_small():
    """The same mean read by a categorical Map at 28 compiles to under 100,000
    parameters (the tables without cells held 6,536 values)."""
    program = _mean_ge() / 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rl.compile(program, ["a"], 28)
    assert model.n_params < 100_000
    quarters = {v / 4 for _, v in _mean_ge_values(28)}  # merged by ==: 1 and 1.0 are one
    assert set(rl.analyze(program, ["a"], 28).value_sets[program]) == quarters


def test_selector_bounds_of_tokens_and_positions():
    """A Select of tokens is bounded by its diagonal; a Select of positions is exact."""
    eq = Select(tokens, tokens, Comparison.EQ)
    lt = Select(indices, indices, Comparison.LT)
    program = SelectorWidth(eq & lt) + SelectorWidth(eq)
    analysis = rl.analyze(program, "ab", 4)
    assert analysis.cell_keys(eq, 3, 1) == ((1,), (0, 1, 2))
    assert analysis.cell_keys(lt, 3, 1) == ((0,), (0,))  # key < query
    assert analysis.cell_keys(eq, 3, 1, causal=True) == ((1,), (0, 1))
    widths = [node for node in analysis.nodes if isinstance(node, SelectorWidth)]
    assert sorted(analysis.value_set(w) for w in widths) == [(0, 1, 2, 3), (1, 2, 3, 4)]


def test_shifted_numerical_token_is_a_token_not_a_mean():
    """prev_sum's shifted token selects at most one key: its values are the tokens and
    None, and the sum of two tokens has 5 values and None (51 without cells)."""
    entry = lib.PROGRAMS["prev_sum"]
    analysis = rl.analyze(entry.build(5), entry.vocab, 5)
    assert analysis.value_set(analysis.node("prev")) == (None, 1, 2, 3)
    assert analysis.value_set(analysis.node("prev_sum")) == (None, 2, 3, 4, 5, 6)


def test_mean_widths_follow_the_selection():
    """A token-dependent mean over the prefix at position i is a mean of exactly i + 1
    values: at i = 1 only 0, 1/2 and 1."""
    fp = lib.make_frac_prevs(tokens == "x")
    analysis = rl.analyze(fp, "xy", 5)
    assert sorted(analysis.cell_values(fp, 4, 1)) == [0.0, 0.5, 1.0]
    assert set(analysis.cell_values(fp, 4, 0)) == {False, True}


def test_length_dependence_reaches_the_cells():
    """length - indices is n - i at each cell, though its table holds every pair."""
    opp = length - indices
    analysis = rl.analyze(opp, "a", 5)
    assert analysis.cell_values(opp, 5, 1) == (4,)
    assert len(analysis.typed_values[opp]) == 9  # every pair: the separable MLPs read it


def test_no_cells_past_the_longest_length():
    """Past MAX_CELL_LENGTH the analysis keeps no cells and counts from 1 as before."""
    width = SelectorWidth(Select(tokens, tokens, Comparison.EQ))
    analysis = rl.analyze(width, "ab", MAX_CELL_LENGTH + 1)
    assert analysis.places == {}
    assert analysis.value_set(width)[0] == 1


def test_expanded_pairs_are_every_pair_of_values():
    """_expanded lists each (pair, value of row a, value of row b) once, across chunks."""
    rng = np.random.default_rng(0)
    rows_a, rows_b = rng.random((7, 9)) < 0.4, rng.random((5, 6)) < 0.5
    ra, rb = rng.integers(0, 7, 30), rng.integers(0, 5, 30)
    sizes = rows_a.sum(axis=1)[ra] * rows_b.sum(axis=1)[rb]
    got = [t for p, x, y in _expanded(rows_a, rows_b, ra, rb, sizes, chunk=7)
           for t in zip(p.tolist(), x.tolist(), y.tolist())]
    want = [(p, x, y) for p in range(30) for x in np.flatnonzero(rows_a[ra[p]]).tolist()
            for y in np.flatnonzero(rows_b[rb[p]]).tolist()]
    assert sorted(got) == sorted(want) and len(got) == len(set(got))


def test_rows_are_merged_and_empty_rows_unreached():
    """Equal rows become one, an empty row marks its cells unreached, equal modes merge."""
    rows = np.array([[1, 0], [0, 0], [1, 0]], dtype=bool)
    sets = from_rows(np.array([[0, 1, 2], [0, 1, 2]], dtype=np.int32), rows)
    assert sets.ids.shape == (1, 3) and sets.ids[0, 1] == -1
    assert sets.ids[0, 0] == sets.ids[0, 2] and sets.union().tolist() == [True, False]
    exact = from_codes(np.array([[1, -1, 0]]), 2)
    assert exact.codes().tolist() == [[1, -1, 0]]


def test_a_select_that_raises_on_every_input_of_a_length_counts_nothing_there():
    """At length 1 (and at position 0 causally) the mean of the other positions is None,
    and a Select comparing it with itself raises on every such input: no count comes
    from there (so the width is at least 1, its own position), as every input that
    evaluate accepts shows."""
    others = rl.numerical(Aggregate(Select(indices, indices, Comparison.NEQ), indices,
                                    default=None))
    width = SelectorWidth(Select(others, others, Comparison.LEQ))
    analysis = rl.analyze(width, "a", 5)
    reached = set()
    for n in range(1, 6):
        for causal in (False, True):
            try:
                reached.update(rl.evaluate(width, ["a"] * n, causal=causal))
            except EvaluationError:  # None compared
                assert n == 1 or causal
    assert set(analysis.value_set(width)) == reached
    assert analysis.cell_values(width, 1, 0) == ()
