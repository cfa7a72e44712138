"""Counting kernels (`interpreter.runs`, `interpreter.kernels_runs`) and the fast codec.

The numba backend picks, per Select + SelectorWidth / Aggregate and chunk, either the
generic (query, key) kernel or a counting kernel. These tests force each choice and
compare with `rasplang.evaluate` exactly (floats bit for bit), causal and not, on every
input up to length 4 and on a larger ragged random batch (threads, several chunks).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rasplang import Aggregate, Comparison, Map, Select, SelectorWidth, indices, tokens
from rasplang.interpreter import Plan, backends, evaluate_batch
from rasplang.interpreter.codec import decode, encode
from rasplang.interpreter.codes import REDUCE
from rasplang.interpreter.kernels_numba import mean_code
from rasplang.interpreter.kernels_runs import answer_table
from rasplang.interpreter.runs import counting_pays, key_runs
from rasplang.interpreter.tables import Table, numeric_info
from rasplang.testing import assert_batch_matches_oracle, oracle_outputs, same_output

VOCAB = (0, 1, 3)
PREDICATES = {
    **{c.name: c for c in (Comparison.EQ, Comparison.LT, Comparison.LEQ, Comparison.GT,
                           Comparison.GEQ, Comparison.NEQ, Comparison.TRUE,
                           Comparison.FALSE)},
    "mod3": lambda k, q: (k + q) % 3 == 0,  # rows of several runs
}
SIDES = {
    "tokens-tokens": (tokens, tokens),
    "indices-tokens": (indices, tokens),
    "tokens-indices": (tokens, indices),
    "indices-indices": (indices, indices),
    "parity-indices": (Map(lambda x: x % 2, tokens), indices),
}
VALUES = {
    "ints": tokens,  # numbers with exact integer means
    "halves": Map(lambda x: x / 2, tokens),  # exact dyadic means
    "thirds": Map(lambda x: x / 3, tokens),  # no exact form: float sums, resolved
    "bools": Map(lambda x: x > 0, tokens),
    "strings": Map(lambda x: "ab"[x % 2], tokens),  # several selected: same or error
    "mixed": Map(lambda x: "a" if x == 3 else x, tokens),
}
EXHAUSTIVE = [list(x) for n in range(5) for x in itertools.product(VOCAB, repeat=n)]


@pytest.fixture(params=["counting", "generic"])
def kernel(request, monkeypatch):
    """Force the numba backend's choice of kernel; yields the calls to the counting test."""
    calls = []

    def forced(*args):
        calls.append(args)
        return request.param == "counting"

    monkeypatch.setattr(backends, "counting_pays", forced)
    return calls


def _check(program, inputs, causal, vocab=VOCAB):
    expected = oracle_outputs(program, inputs, causal)

    def run(xs):
        return evaluate_batch(program, xs, vocab=vocab, max_seq_len=max(map(len, inputs)),
                              causal=causal, backend="numba")

    assert_batch_matches_oracle(run, inputs, expected)
    fine = [i for i, want in enumerate(expected) if not isinstance(want, Exception)]
    if fine:
        got = run([inputs[i] for i in fine])
        for i, out in zip(fine, got):  # floats bit for bit
            assert same_output(out, expected[i], tol=0.0), inputs[i]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("sides", sorted(SIDES))
@pytest.mark.parametrize("pred", sorted(PREDICATES))
def test_selector_width_matches_evaluate(pred, sides, causal, kernel):
    """SelectorWidth of one Select, every input up to length 4, both kernels."""
    keys, queries = SIDES[sides]
    _check(SelectorWidth(Select(keys, queries, PREDICATES[pred])), EXHAUSTIVE, causal)
    assert kernel  # the backend asked


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("values", sorted(VALUES))
@pytest.mark.parametrize("sides", sorted(SIDES))
@pytest.mark.parametrize("pred", ["EQ", "LEQ", "GT", "NEQ", "TRUE", "FALSE", "mod3"])
def test_aggregate_matches_evaluate(pred, sides, values, causal, kernel):
    """Aggregate of one Select over numbers, bools, strings and mixes, both kernels."""
    keys, queries = SIDES[sides]
    program = Aggregate(Select(keys, queries, PREDICATES[pred]), VALUES[values], default=-1)
    _check(program, EXHAUSTIVE, causal)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("values", ["ints", "thirds", "strings"])
def test_large_ragged_batch_matches_evaluate(values, causal, kernel):
    """2,000 random sequences of length 0..12 (threads, padding, reductions)."""
    rng = np.random.default_rng(7)
    inputs = [rng.choice(VOCAB, size=int(rng.integers(0, 13))).tolist() for _ in range(2000)]
    inputs = [[int(x) for x in xs] for xs in inputs]
    for pred in ("EQ", "LEQ", "mod3"):
        program = Aggregate(Select(tokens, tokens if pred == "EQ" else indices,
                                   PREDICATES[pred]), VALUES[values], default=None)
        _check(program, inputs, causal)
        _check(SelectorWidth(Select(indices, tokens, PREDICATES[pred])), inputs, causal)


@pytest.mark.parametrize(("keys", "pred", "causal", "kernel_name"), [
    (indices, Comparison.LEQ, False, "prefix_sums"),
    (indices, Comparison.EQ, False, "prefix_sums"),
    (indices, Comparison.LEQ, True, "prefix_sums"),
    (tokens, Comparison.EQ, False, "code_sums"),
    (tokens, Comparison.LT, False, "prefix_sums"),
    (tokens, Comparison.EQ, True, "code_sums"),
    (tokens, Comparison.LT, True, "code_sums"),
])
def test_backend_picks_the_counting_kernel_for_the_select(keys, pred, causal, kernel_name,
                                                          monkeypatch):
    """Keys that are indices get prefix sums over positions (clipped when causal), EQ rows
    and other causal rows sums per key code, other non-causal rows prefix sums."""
    from rasplang.interpreter import kernels_runs

    called = []
    for name in dir(kernels_runs):
        if name.endswith("_kernel") and not name.startswith("reduce"):
            original = getattr(kernels_runs, name)
            monkeypatch.setattr(kernels_runs, name, lambda *a, _f=original, _n=name: (
                called.append(_n.removesuffix("_kernel")), _f(*a))[1])
    select = Select(keys, tokens, pred)
    for program in (SelectorWidth(select), Aggregate(select, VALUES["halves"])):
        called.clear()
        _check(program, EXHAUSTIVE, causal)
        assert called and set(called) == {kernel_name}


def test_undetermined_queries_are_reduced_key_by_key(monkeypatch):
    """Several selected strings (same or an error) and inexact means go through
    `reduce_marked_kernel`."""
    from rasplang.interpreter import kernels_runs

    marked = []
    original = kernels_runs.reduce_marked_kernel
    monkeypatch.setattr(kernels_runs, "reduce_marked_kernel",
                        lambda *a: (marked.append(int(a[-4].sum())), original(*a)))
    for values in ("strings", "thirds", "mixed"):
        marked.clear()
        _check(Aggregate(Select(tokens, tokens, Comparison.LEQ), VALUES[values]), EXHAUSTIVE,
               False)
        assert marked and marked[0] > 0


def test_error_entries_use_the_generic_kernel(monkeypatch):
    """A predicate that raises (or a None key) leaves no runs: the generic kernel reports
    the first bad input as evaluate does."""
    assert key_runs(np.array([[0, 1], [2, 0]], dtype=np.int8)) is None
    shifted = Aggregate(Select(indices, indices, lambda k, q: q == k + 1), tokens)
    program = SelectorWidth(Select(shifted, tokens, Comparison.EQ))  # None keys: error
    _check(program, EXHAUSTIVE, False)


def test_key_runs_reproduce_the_table():
    """Runs list exactly the true entries of each column, in order."""
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 3), (17, 9), (4, 0), (0, 4)]:
        pred = rng.integers(0, 2, size=shape).astype(np.int8)
        runs = key_runs(pred)
        assert runs.n_keys == shape[0] and len(runs.ptr) == shape[1] + 1
        for q in range(shape[1]):
            rebuilt = np.zeros(shape[0], dtype=np.int8)
            for r in range(runs.ptr[q], runs.ptr[q + 1]):
                assert runs.lo[r] < runs.hi[r]
                rebuilt[runs.lo[r]:runs.hi[r]] = 1
            assert rebuilt.tolist() == pred[:, q].tolist()
    eq = key_runs(np.eye(6, dtype=np.int8)[:, [2, 0, 5]])
    assert eq.mean_runs == 1 and eq.mean_width == 1 and eq.point.tolist() == [2, 0, 5]
    lt = key_runs(np.tril(np.ones((3, 3), dtype=np.int8), -1).T)
    assert lt.point is None
    assert key_runs(np.array([[0, 1], [0, 0]], dtype=np.int8)).point.tolist() == [-1, 0]


def test_counting_pays_prefers_counting_for_small_tables_only():
    """Small key tables pay at any length; prefix sums over a huge table at a short
    length do not; rows of one key code (EQ) always pay."""
    small = key_runs(np.eye(4, dtype=np.int8))
    assert counting_pays(small, 16, causal=False, keys_are_positions=False)
    huge = key_runs(1 - np.eye(10_000, dtype=np.int8))  # NEQ: prefix sums over 10,000 codes
    assert not counting_pays(huge, 4, causal=False, keys_are_positions=False)
    assert counting_pays(key_runs(np.eye(10_000, dtype=np.int8)), 4, False, False)  # point
    leq = key_runs(np.tril(np.ones((64, 64), dtype=np.int8)).T)
    assert counting_pays(leq, 64, causal=True, keys_are_positions=True)


@pytest.mark.parametrize("values", [[0, 1], [True, False, 3], [0.5, 0.25, -3], [-7, 2, 0]])
def test_answer_table_holds_the_kernels_means(values):
    """Row 0 holds the default at sum 0; rows >= 2 the code `mean_code` finds by search
    (`REDUCE` where the table lacks the mean); past the budget only row 0 is left."""
    table = Table.of([*values, *(float(v) for v in values), 0.375, -1.75])
    info = numeric_info(table, 8)
    pairs = sorted((v, c) for c, v in enumerate(table.values) if type(v) is float)
    mean_values = np.array([v for v, _ in pairs])
    mean_codes = np.array([c for _, c in pairs], dtype=np.int32)
    tab, tmin = answer_table(info.num, info.denom, 8, mean_values, mean_codes, 99)
    assert tab.shape[0] == 9 and tab[0, -tmin] == 99
    for count in range(2, 9):
        for i in range(tab.shape[1]):
            _, code = mean_code(i + tmin, count, info.denom, mean_values, mean_codes)
            assert tab[count, i] == (REDUCE if code < 0 else code)
    small, tmin = answer_table(info.num, info.denom, 8, mean_values, mean_codes, 99, budget=4)
    assert small.tolist() == [[99]] and tmin == 0


def test_codec_round_trip_equal_ragged_and_wide_vocabularies():
    """encode/decode: equal lengths, ragged lengths, empty sequences, > 256 tokens."""
    for vocab in (("a", "b", 1, 1.5), tuple(range(300))):
        rng = np.random.default_rng(1)
        for lengths in ([4, 4, 4], [0, 3, 1, 4], [0, 0]):
            inputs = [[vocab[i] for i in rng.integers(len(vocab), size=n)] for n in lengths]
            codes, got_lengths = encode(inputs, vocab, 4)
            assert codes.dtype == np.int32 and got_lengths.tolist() == lengths
            assert decode(codes, got_lengths, Table.of(vocab)) == inputs
    with pytest.raises(ValueError, match=r"token 'z' at \(sequence 1, position 0\)"):
        encode([["a"], ["z"]], ("a", "b"), 4)
    with pytest.raises(ValueError, match=r"token 700 at \(sequence 1, position 1\)"):
        encode([[0], [1, 700]], tuple(range(300)), 4)


@pytest.mark.parametrize("values", [
    (0, 5, -3, 2**62), (True, False), (0.5, -0.0, float("inf")), (1, 1.0, True, None, "a"),
    (2**70, 1), (np.int64(3), 4),
])
def test_decode_keeps_each_values_type(values):
    """Decoded values are the table's own values: types (int, bool, float, others) kept."""
    table = Table.of(values)
    codes = np.array([[len(table) - 1 - i for i in range(len(table))], [0] * len(table)])
    rows = decode(codes, np.array([len(table), 1]), table)
    want = [list(reversed(table.values)), [table.values[0]]]
    assert rows == want
    assert [[type(v) for v in r] for r in rows] == [[type(v) for v in r] for r in want]


def test_run_arrays_does_not_alias_the_callers_codes():
    """A kept tokens node is a copy, even when the checks left the codes untouched."""
    plan = Plan(SelectorWidth(Select(tokens, tokens, Comparison.EQ)), VOCAB, 3)
    codes = np.array([[0, 1, 2]], dtype=np.int32)
    out = plan.run_arrays(codes, np.array([3]), outputs="tokens")
    codes[0, 0] = 2
    assert out["tokens"].codes.tolist() == [[0, 1, 2]]
