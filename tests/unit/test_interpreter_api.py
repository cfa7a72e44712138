"""evaluate_batch and Plan: API, bad input, arrays, intermediate nodes."""

from __future__ import annotations

import numpy as np
import pytest

import rasplang as rl
from rasplang import Aggregate, Map, Select, SelectorWidth, indices, numerical, select, tokens
from rasplang.interpreter import Plan, evaluate_batch
from rasplang.lib import PROGRAMS

BACKENDS = ["numpy", "numba"]


def _frac_prevs():
    is_x = numerical(Map(lambda t: 1 if t == "x" else 0, tokens)).named("is_x")
    prevs = select(indices, indices, "<=").named("prevs")
    return numerical(Aggregate(prevs, is_x, default=0)).named("frac_prevs")


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_gives_empty_list(backend):
    """An empty batch returns [] (and a plan runs it too)."""
    assert evaluate_batch(tokens, [], backend=backend) == []
    assert Plan(tokens, "ab", 3, backend=backend).run([]) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_sequence_gives_empty_output(backend):
    """An empty sequence gives [] among non-empty ones, and alone."""
    prog = _frac_prevs()
    assert evaluate_batch(prog, [[], list("xy"), []], backend=backend) == [[], [1, 0.5], []]
    assert evaluate_batch(prog, [[]], backend=backend) == [[]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_vocab_and_length_are_inferred(backend):
    """Without vocab and max_seq_len, both come from the inputs."""
    prog = SelectorWidth(select(tokens, tokens, "=="))
    assert evaluate_batch(prog, [[3, 1, 3], [2]], backend=backend) == [[2, 1, 2], [1]]


def test_token_outside_vocab_names_token_and_position():
    """A token outside vocab -> ValueError naming the token and (sequence, position)."""
    with pytest.raises(ValueError, match=r"token 'z' at \(sequence 1, position 2\)"):
        evaluate_batch(tokens, [list("ab"), list("abz")], vocab="ab", max_seq_len=4)


def test_unhashable_token_is_reported():
    """An unhashable token is reported like any token outside the vocabulary."""
    with pytest.raises(ValueError, match=r"token \[1\] at \(sequence 0, position 0\)"):
        evaluate_batch(tokens, [[[1]]], vocab=[1], max_seq_len=2)


def test_too_long_sequence_names_index_and_length():
    """A sequence longer than max_seq_len -> ValueError with its index and length."""
    with pytest.raises(ValueError, match="sequence 2 has length 5, longer than max_seq_len=4"):
        evaluate_batch(tokens, [list("a"), list("ab"), list("aaaaa")], vocab="ab",
                       max_seq_len=4)


def test_unknown_backend_is_rejected():
    """An unknown backend name -> ValueError listing the backends."""
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        evaluate_batch(tokens, [[1]], backend="tpu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_aggregate_of_different_strings_raises_evaluates_error(backend):
    """Several different non-numbers: the same error as evaluate, naming node and input."""
    prog = Aggregate(select(tokens, tokens, "true"), tokens).named("agg")
    inputs = [["a"], ["a", "a"], ["a", "b"], ["b", "a"]]
    with pytest.raises(rl.EvaluationError) as info:
        rl.evaluate(prog, ["a", "b"])
    with pytest.raises(rl.EvaluationError, match="input 2 of the batch") as batch_info:
        evaluate_batch(prog, inputs, vocab="ab", max_seq_len=3, backend=backend)
    assert str(info.value) in str(batch_info.value)
    assert "'agg'" in str(batch_info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_offending_input_wins_across_nodes(backend):
    """The error reported is the first failing input, even if a later node fails on it."""
    early = Map(lambda x: 1 // (x - 3), tokens).named("early")  # fails on token 3
    late = rl.SequenceMap(lambda a, i: 1 // (i - 1), early, indices).named("late")  # position 1
    inputs = [[1], [3], [1, 1]]
    with pytest.raises(rl.EvaluationError, match=r"'early'.*input 1 of the batch"):
        evaluate_batch(late, inputs, vocab=[1, 3], max_seq_len=2, backend=backend)
    with pytest.raises(rl.EvaluationError, match=r"'late'.*input 1 of the batch"):
        evaluate_batch(late, [inputs[0], inputs[2], inputs[1]], vocab=[1, 3], max_seq_len=2,
                       backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bools_ints_and_floats_keep_their_types(backend):
    """True stays a bool, 1 an int, and a mean of ints a float, as in evaluate."""
    as_bool = Map(lambda x: x > 1, tokens)
    mixed = Map(lambda x: True if x == 1 else (1 if x == 2 else 1.0), tokens)
    mean = Aggregate(select(tokens, tokens, "true"), Map(lambda x: 1, tokens))
    for prog in (as_bool, mixed, mean):
        xs = [[1, 2, 3], [2, 2]]
        got = evaluate_batch(prog, xs, vocab=[1, 2, 3], max_seq_len=3, backend=backend)
        want = [rl.evaluate(prog, x) for x in xs]
        assert [[type(v) for v in row] for row in got] == [[type(v) for v in row]
                                                          for row in want]
        assert got == want


@pytest.mark.parametrize("backend", BACKENDS)
def test_categorical_mean_outside_table_is_exact(backend):
    """A categorical Aggregate averaging different numbers returns the exact mean."""
    prog = Aggregate(select(indices, indices, "<="), Map(lambda x: x * 3, tokens))
    xs = [[1, 2], [1, 2, 2], [2, 1, 1, 1]]
    got = evaluate_batch(prog, xs, vocab=[1, 2], max_seq_len=4, backend=backend)
    assert got == [rl.evaluate(prog, x) for x in xs]
    assert got[1][2] == 5.0 and type(got[1][2]) is float


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_dyadic_means_fall_back_to_exact_evaluation(backend):
    """Means of thirds (not exact in binary) still equal evaluate's, categorical or not."""
    third = Map(lambda x: 1 / 3 if x == "a" else 2 / 3, tokens)
    sel = select(indices, indices, "<=")
    downstream = Map(lambda m: m > 0.5, Aggregate(sel, third))
    for prog in (Aggregate(sel, third), numerical(Aggregate(sel, numerical(third))),
                 downstream):
        xs = [list("ab"), list("abba"), list("bbba"), list("a")]
        got = evaluate_batch(prog, xs, vocab="ab", max_seq_len=4, backend=backend)
        assert got == [rl.evaluate(prog, x) for x in xs]


@pytest.mark.parametrize("backend", BACKENDS)
def test_selector_program_returns_matrices(backend):
    """A Selector program returns evaluate's [query][key] lists of bools."""
    prog = select(tokens, tokens, "<") | ~select(indices, indices, "==")
    xs = [[1, 2, 1], [3], []]
    for causal in (False, True):
        got = evaluate_batch(prog, xs, vocab=[1, 2, 3], max_seq_len=3, causal=causal,
                             backend=backend)
        assert got == [rl.evaluate(prog, x, causal=causal) for x in xs]


@pytest.mark.parametrize("backend", BACKENDS)
def test_constants_and_full(backend):
    """Full, ConstantSOp and ConstantSelector work on inputs of the constant's length."""
    const = rl.ConstantSOp([5, 6, 7])
    csel = rl.ConstantSelector([[1, 0, 0], [1, 1, 0], [0, 1, 1]])
    prog = rl.SequenceMap(lambda a, b: a + b, Aggregate(csel, const, default=0), rl.Full(1))
    xs = [["a", "b", "a"], ["b", "b", "b"]]
    got = evaluate_batch(prog, xs, vocab="ab", max_seq_len=3, backend=backend)
    assert got == [rl.evaluate(prog, x) for x in xs]
    with pytest.raises(rl.EvaluationError, match="input 1 of the batch"):
        evaluate_batch(prog, [list("aba"), list("ab")], vocab="ab", max_seq_len=3,
                       backend=backend)


def test_plan_run_arrays_returns_codes_floats_and_none_mask():
    """run_arrays returns codes into the table, float values and a None mask."""
    agg = Aggregate(select(indices, indices, "=="), Map(lambda x: x * 2, tokens)).named("agg")
    shifted = Aggregate(select(indices, indices + 1, "=="), tokens).named("shifted")
    prog = rl.SequenceMap(lambda a, b: (a, b) if b is not None else a, agg, shifted)
    plan = Plan(prog, vocab=[1, 2], max_seq_len=3)
    codes, lengths = plan.encode([[1, 2, 2], [2]])
    out = plan.run_arrays(codes, lengths, outputs=["agg", "shifted"])
    table = out["agg"].table.values
    assert [[table[c] for c in row[:n]] for row, n in zip(out["agg"].codes, lengths)] == \
        [[2, 4, 4], [4]]
    np.testing.assert_array_equal(out["agg"].values, [[2.0, 4.0, 4.0], [4.0, np.nan, np.nan]])
    np.testing.assert_array_equal(out["shifted"].none_mask,
                                  [[False, False, True], [True, False, False]])
    assert out.output.tolist() == [rl.evaluate(prog, [1, 2, 2]), rl.evaluate(prog, [2])]
    with pytest.raises(KeyError, match="was not kept"):
        out["tokens"]


def test_run_arrays_keeps_every_node_by_label():
    """outputs='all' returns every node, each equal to evaluate_all's value."""
    lib = PROGRAMS["sort_unique"]
    prog = lib.build()
    plan = Plan(prog, lib.vocab, lib.max_seq_len)
    xs = [[3, 1, 5, 2], [4, 2]]
    codes, lengths = plan.encode(xs)
    out = plan.run_arrays(codes, lengths, outputs="all")
    for i, x in enumerate(xs):
        reference = rl.evaluate_all(prog, x)
        for node, label in plan.labels.items():
            value = out[label].tolist()[i]
            want = reference[node].tolist() if isinstance(node, rl.Selector) else reference[node]
            assert value == want, label


def test_run_arrays_rejects_bad_codes_and_lengths():
    """Codes outside the vocabulary and impossible lengths are reported with positions."""
    plan = Plan(tokens, "ab", 3)
    with pytest.raises(ValueError, match=r"token code 2 at \(sequence 0, position 1\)"):
        plan.run_arrays(np.array([[0, 2]]), np.array([2]))
    with pytest.raises(ValueError, match="sequence 0 has length 3"):
        plan.run_arrays(np.array([[0, 1]]), np.array([3]))


def test_plan_is_not_changed_by_runs():
    """Values a run adds to its tables (off-table means) do not leak into the plan."""
    prog = Aggregate(select(indices, indices, "<="), Map(lambda x: x * 3, tokens))
    plan = Plan(prog, [1, 2], 4)
    before = plan.table(plan.labels[prog])
    assert plan.run([[1, 2, 2]]) == [rl.evaluate(prog, [1, 2, 2])]
    assert plan.table(plan.labels[prog]) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunks_give_the_same_result(backend, monkeypatch):
    """Splitting the batch into many small chunks changes nothing (errors included)."""
    import rasplang.interpreter.backends as backends
    import rasplang.interpreter.kernels_numpy as kernels_numpy

    lib = PROGRAMS["sort"]
    prog = lib.build()
    rng = np.random.default_rng(0)
    xs = [list(rng.choice(lib.vocab, size=rng.integers(0, 6))) for _ in range(50)]
    whole = evaluate_batch(prog, xs, vocab=lib.vocab, max_seq_len=5, backend=backend)
    monkeypatch.setattr(backends, "NUMBA_CHUNK_POSITIONS", 7)
    monkeypatch.setattr(kernels_numpy, "PAIR_BUDGET", 30)
    assert evaluate_batch(prog, xs, vocab=lib.vocab, max_seq_len=5, backend=backend) == whole
    assert whole == [rl.evaluate(prog, x) for x in xs]


def test_select_with_callable_predicate_and_none_keys():
    """A callable predicate works; a None key raises evaluate's error for that input."""
    prev = Aggregate(select(indices, indices + 1, "=="), tokens)  # None at position 0
    prog = SelectorWidth(Select(prev, tokens, lambda k, q: k != q))
    xs = [["a"], ["a", "b"]]
    with pytest.raises(rl.EvaluationError, match="input 0 of the batch"):
        evaluate_batch(prog, xs, vocab="ab", max_seq_len=3)
    ok = SelectorWidth(Select(tokens, tokens, lambda k, q: k != q))
    assert evaluate_batch(ok, xs, vocab="ab", max_seq_len=3) == [[0], [1, 1]]
