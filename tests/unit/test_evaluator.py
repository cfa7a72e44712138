"""The reference evaluator against hand-computed outputs."""

import pytest

import rasplang as rl
from rasplang import (
    Aggregate,
    Comparison,
    ConstantSelector,
    ConstantSOp,
    Full,
    LinearSequenceMap,
    Map,
    Select,
    SelectorWidth,
    SequenceMap,
    evaluate,
    indices,
    length,
    tokens,
)
from rasplang.evaluator import EvaluationError, aggregate_row, mean


def test_primitives():
    """tokens is the input, indices 0..n-1, length n everywhere."""
    assert evaluate(tokens, list("abc")) == ["a", "b", "c"]
    assert evaluate(indices, list("abc")) == [0, 1, 2]
    assert evaluate(length, list("abc")) == [3, 3, 3]


def test_program_call_is_evaluate():
    """program(xs) is evaluate(program, xs)."""
    prog = tokens + indices
    assert prog([10, 20]) == evaluate(prog, [10, 20]) == [10, 21]


def test_empty_input():
    """An empty input gives empty outputs everywhere."""
    sel = Select(tokens, tokens, Comparison.EQ)
    assert evaluate(Aggregate(sel, tokens), []) == []
    assert evaluate(SelectorWidth(sel), []) == []
    assert evaluate(sel, []) == []


def test_map_and_sequence_map_propagate_none():
    """A None input to Map or SequenceMap gives None without calling f."""
    src = ConstantSOp([1, None, 3])
    assert evaluate(Map(lambda x: x * 10, src), [0, 0, 0]) == [10, None, 30]
    assert evaluate(SequenceMap(lambda x, y: x + y, src, indices), [0, 0, 0]) == [1, None, 5]
    assert evaluate(SequenceMap(lambda x, y: x + y, indices, src), [0, 0, 0]) == [1, None, 5]


def test_linear_sequence_map():
    """LinearSequenceMap computes fst_fac * x + snd_fac * y."""
    assert evaluate(LinearSequenceMap(tokens, indices, 2, -1), [5, 5, 5]) == [10, 9, 8]


def test_select_matrix_is_query_by_key():
    """Select(keys, queries, LT)[q][k] = keys[k] < queries[q]."""
    sel = Select(tokens, tokens, Comparison.LT)
    assert evaluate(sel, [3, 1, 2]) == [
        [False, True, True],
        [False, False, False],
        [False, True, False],
    ]


def test_select_with_callable_predicate():
    """A callable predicate receives (key, query)."""
    sel = Select(tokens, indices, lambda k, q: k == q + 1)
    assert evaluate(sel, [1, 2, 0]) == [
        [True, False, False],
        [False, True, False],
        [False, False, False],
    ]


def test_aggregate_rules():
    """Aggregate: none -> default, one -> value, several numbers -> mean."""
    sel = Select(indices, indices, Comparison.LT)  # keys strictly before the query
    assert evaluate(Aggregate(sel, tokens, default=-1), [4, 8, 3]) == [-1, 4, 6.0]
    assert evaluate(Aggregate(sel, tokens), [4, 8, 3]) == [None, 4, 6.0]


def test_aggregate_mean_of_booleans():
    """Booleans are numbers: their mean is the fraction of True."""
    sel = Select(indices, indices, Comparison.LEQ)
    prog = rl.numerical(Aggregate(sel, rl.numerical(tokens == "x"), default=0))
    assert evaluate(prog, list("xyxx")) == [1, 0.5, 2 / 3, 0.75]


def test_aggregate_mean_is_exact_and_order_free():
    """Means are exact (fractions) and rounded once, whatever the order of values."""
    assert mean([0.1, 0.2, 0.3]) == mean([0.3, 0.1, 0.2]) == 0.2
    assert mean([1, 2]) == 1.5
    assert mean([True, False, False]) == 1 / 3


def test_aggregate_equal_non_numbers_and_error():
    """Several equal non-numbers give that value; different ones raise naming the node."""
    sel = Select(tokens, tokens, Comparison.TRUE)
    agg = Aggregate(sel, tokens).named("agg")
    assert evaluate(agg, list("aa")) == ["a", "a"]
    with pytest.raises(EvaluationError, match=r"Aggregate 'agg': cannot aggregate several "
                       r"different non-numeric values \['a', 'b'\] at query position 0"):
        evaluate(agg, list("ab"))


def test_aggregate_row_rules():
    """aggregate_row covers empty, single, numeric, equal and mixed selections."""
    assert aggregate_row([], "d") == "d"
    assert aggregate_row(["x"], "d") == "x"
    assert aggregate_row([None], 0) is None
    assert aggregate_row([1, 2, 3], None) == 2.0
    assert aggregate_row([None, None], 0) is None
    with pytest.raises(ValueError, match="different non-numeric"):
        aggregate_row([1, "a"], None)
    with pytest.raises(ValueError, match="different non-numeric"):
        aggregate_row([None, 1], None)


def test_selector_width():
    """SelectorWidth counts selected keys per query."""
    sel = Select(tokens, tokens, Comparison.EQ)
    assert evaluate(SelectorWidth(sel), list("abaa")) == [3, 1, 3, 3]


def test_selector_and_or_not():
    """Selector and/or/not combine matrices elementwise."""
    eq = Select(tokens, tokens, Comparison.EQ)
    before = Select(indices, indices, Comparison.LT)
    xs = list("aba")
    assert evaluate(SelectorWidth(eq & before), xs) == [0, 0, 1]
    assert evaluate(SelectorWidth(eq | before), xs) == [2, 2, 3]
    assert evaluate(SelectorWidth(~eq), xs) == [1, 2, 1]


def test_causal_masks_every_selector():
    """causal=True masks Selects, ConstantSelectors and the output of SelectorNot."""
    everything = Select(tokens, tokens, Comparison.TRUE)
    nothing = Select(tokens, tokens, Comparison.FALSE)
    xs = [1, 2, 3]
    assert evaluate(SelectorWidth(everything), xs, causal=True) == [1, 2, 3]
    assert evaluate(SelectorWidth(~nothing), xs, causal=True) == [1, 2, 3]
    assert evaluate(SelectorWidth(~nothing), xs) == [3, 3, 3]
    const = ConstantSelector([[1, 1, 1]] * 3)
    assert evaluate(SelectorWidth(const), xs, causal=True) == [1, 2, 3]
    assert evaluate(everything, [1, 2], causal=True) == [[True, False], [True, True]]
    prog = Aggregate(everything, tokens)
    assert evaluate(prog, [2, 4, 6], causal=True) == [2, 3.0, 4.0]


def test_full_and_constants():
    """Full repeats its fill; ConstantSOp returns its value."""
    assert evaluate(Full("z"), [1, 2, 3]) == ["z", "z", "z"]
    assert evaluate(ConstantSOp([7, 8]), [0, 0]) == [7, 8]
    assert evaluate(ConstantSOp([7, 8], check_length=False), [0, 0, 0]) == [7, 8]


def test_constant_sop_length_error():
    """A ConstantSOp whose length does not match the input names the node."""
    with pytest.raises(EvaluationError, match=r"ConstantSOp 'c': constant has length 2 but "
                       r"the input has length 3"):
        evaluate(ConstantSOp([1, 2]).named("c"), [1, 2, 3])


def test_constant_selector_shape_error():
    """A ConstantSelector of the wrong size names the node."""
    with pytest.raises(EvaluationError, match=r"ConstantSelector 'cs': constant has shape"):
        evaluate(ConstantSelector([[1, 0], [0, 1]]).named("cs"), [1, 2, 3])


def test_none_key_or_query_is_an_error():
    """A None key or query in a Select raises, naming the node and position."""
    shifted = Aggregate(Select(indices, indices, lambda k, q: k == q - 1), tokens)
    sel = Select(shifted, tokens, Comparison.EQ).named("bad_select")
    with pytest.raises(EvaluationError, match=r"Select 'bad_select': key is None at position 0"):
        evaluate(SelectorWidth(sel), [1, 2])
    sel2 = Select(tokens, shifted, Comparison.EQ).named("bad_query")
    with pytest.raises(EvaluationError, match=r"'bad_query': query is None at position 0"):
        evaluate(SelectorWidth(sel2), [1, 2])


def test_map_error_names_node_and_value():
    """A function that raises inside a Map is re-raised with the label and the value."""
    prog = Map(lambda x: 1 // x, tokens).named("inverse")
    with pytest.raises(EvaluationError, match=r"Map 'inverse': f raised ZeroDivisionError: "
                       r".* on value 0 at position 1"):
        evaluate(prog, [1, 0])


def test_sequence_map_error_names_node_and_values():
    """A function that raises inside a SequenceMap names both values."""
    prog = SequenceMap(lambda x, y: x // y, tokens, indices).named("div")
    with pytest.raises(EvaluationError, match=r"SequenceMap 'div'.*values \(5, 0\) at position 0"):
        evaluate(prog, [5, 5])


def test_predicate_error_names_node():
    """A predicate that raises names the Select, key and query."""
    sel = Select(tokens, tokens, lambda k, q: k < q).named("cmp")
    with pytest.raises(EvaluationError, match=r"Select 'cmp': predicate raised TypeError"):
        evaluate(sel, [1, "a"])


def test_shared_node_is_evaluated_once():
    """A node shared by several parents is evaluated once per call."""
    calls = []

    def f(x, i):
        calls.append(x)
        return x + i

    shared = SequenceMap(f, tokens, indices)
    prog = SequenceMap(lambda a, b: a + b, shared + 1, shared * 2)
    assert evaluate(prog, [1, 2]) == [4, 10]
    assert calls == [1, 2]


def test_deep_chain_has_no_recursion_limit():
    """A chain of 5,000 Maps evaluates without hitting the recursion limit."""
    prog = tokens
    for _ in range(5000):
        prog = Map(lambda x: x + 1, prog, simplify=False)
    assert evaluate(prog, [0, 1]) == [5000, 5001]
    assert len(rl.topological_order(prog)) == 5001


def test_evaluate_all_gives_every_node():
    """evaluate_all returns the value of every node, keyed by node."""
    inc = (tokens + 1).named("inc")
    prog = (inc * 2).named("double")
    values = rl.evaluate_all(prog, [1, 2])
    assert values[tokens] == [1, 2] and values[prog] == [4, 6]
    assert len(values) == 2  # Map(Map) was fused: tokens and the fused map
    assert rl.evaluate_all(inc, [5])[inc] == [6]


def test_to_dot_and_format_program():
    """to_dot emits a digraph with every edge; format_program lists nodes children-first."""
    sel = Select(tokens, indices, Comparison.EQ).named("sel")
    prog = Aggregate(sel, tokens).named("agg")
    dot = rl.to_dot(prog)
    assert dot.startswith("digraph rasp {")
    assert '"tokens" -> "sel";' in dot and '"indices" -> "sel";' in dot
    assert '"sel" -> "agg";' in dot and '"tokens" -> "agg";' in dot
    lines = rl.format_program(prog).splitlines()
    assert lines[-1] == "agg = Aggregate(sel, tokens, default=None)"
    assert lines.index("sel = Select(tokens, indices, Comparison.EQ)") < len(lines) - 1


def test_duplicate_labels_are_made_unique():
    """Two nodes with the same name get label_id labels in a program's graph."""
    a = (tokens + 1).named("x")
    b = (tokens * 2).named("x")
    prog = SequenceMap(lambda p, q: p + q, a, b).named("sum")
    labels = rl.graph.unique_labels(rl.topological_order(prog))
    assert labels[a] == f"x_{a.unique_id}" and labels[b] == f"x_{b.unique_id}"
    assert labels[prog] == "sum"


def test_rasp_compat_module():
    """A tracr-style program runs with `from rasplang import rasp`."""
    from rasplang import rasp

    sel = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
    hist = rasp.numerical(rasp.SelectorWidth(sel))
    assert rasp.evaluate(hist, list("abaa")) == [3, 1, 3, 3]
    agg = rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices,
                                                    rasp.Comparison.LEQ),
                                        rasp.numerical(rasp.Map(lambda x: x == "a",
                                                                rasp.tokens)),
                                        default=0))
    assert rasp.is_numerical(agg)
    assert agg(list("ab")) == [1, 0.5]
    assert isinstance(rasp.selector_and(sel, sel), rasp.SelectorAnd)
    assert rasp.annotate(hist, foo=1).annotations["foo"] == 1
