"""The analysis as the one table IR: each function called once per typed value, tables
shared by the interpreter, the compiler and verify, one rule per node kind per pass."""

from __future__ import annotations

import itertools
import threading
from collections import Counter

import numpy as np
import pytest

import rasplang as rl
from rasplang import (
    Aggregate,
    Map,
    Select,
    SelectorWidth,
    SequenceMap,
    analyze,
    indices,
    lib,
    numerical,
    tokens,
)
from rasplang.analysis import PRED_ERROR, PRED_FALSE, PRED_TRUE, RAISED, RAISED_CODE
from rasplang.interpreter import Plan

VOCAB, N = (1, 2, 3), 3
#: The typed values of ``summed`` below: ``2 * x + i`` for x in VOCAB, i < N.
SUMMED = sorted({2 * x + i for x in VOCAB for i in range(N)})


class Counted:
    """A function that counts its calls per argument tuple."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: Counter = Counter()

    def __call__(self, *args):
        self.calls[args] += 1
        return self.fn(*args)


def _counted_program():
    """A Map, a SequenceMap and a Select predicate whose calls are counted."""
    f = Counted(lambda x: x * 2)
    g = Counted(lambda x, i: x + i)
    p = Counted(lambda k, q: k <= q)
    mapped = Map(f, tokens).named("mapped")
    summed = SequenceMap(g, mapped, indices).named("summed")
    program = SelectorWidth(Select(summed, summed, p).named("select")).named("width")
    return program, f, g, p


def _assert_once_each(f, g, p):
    assert dict(f.calls) == {(x,): 1 for x in VOCAB}
    assert dict(g.calls) == {(2 * x, i): 1 for x in VOCAB for i in range(N)}
    want = {(k, q): 1 for k in SUMMED for q in SUMMED}
    assert dict(p.calls) == want


def test_analyze_calls_each_function_once_and_keeps_predicate_tables():
    """analyze calls f once per typed value, g once per pair and a small Select's
    predicate once per pair (for its cells); the table is kept and never built again."""
    program, f, g, p = _counted_program()
    analysis = analyze(program, VOCAB, N)
    _assert_once_each(f, g, p)
    select = analysis.node("select")
    table = analysis.select_table(select)
    assert analysis.select_table(select) is table and analysis.predicate(select) is not None
    _assert_once_each(f, g, p)


def test_plan_and_runs_call_no_function_again():
    """A plan built from an analysis, and its runs, call no function of the program."""
    program, f, g, p = _counted_program()
    analysis = analyze(program, VOCAB, N)
    plan = Plan(program, VOCAB, N, analysis=analysis)
    inputs = [[1, 2, 3], [3, 3], [2], [1, 1, 2]]
    got = plan.run(inputs)
    plan.run_arrays(*plan.encode(inputs), outputs="all")
    _assert_once_each(f, g, p)
    assert got == [rl.evaluate(program, x) for x in inputs]


def test_verify_calls_each_function_once_per_typed_value():
    """verify (one analysis, the compiler, the interpreter, the model) calls f once per
    typed input value, a SequenceMap once per pair, a predicate once per (key, query)."""
    program, f, g, p = _counted_program()
    report = rl.verify(program, VOCAB, N, model=None)
    assert report.ok and report.checked == 3 + 9 + 27
    _assert_once_each(f, g, p)


def test_analysis_must_match_program_vocab_and_length():
    """Plan and compile refuse an analysis made for another program, vocab or length."""
    program = Map(lambda x: x + 1, tokens)
    analysis = analyze(program, VOCAB, N)
    assert Plan(program, VOCAB, N, analysis=analysis).analysis is analysis
    with pytest.raises(ValueError, match="another program"):
        Plan(Map(lambda x: x, tokens), VOCAB, N, analysis=analysis)
    with pytest.raises(ValueError, match="vocabulary"):
        Plan(program, (3, 2, 1), N, analysis=analysis)
    with pytest.raises(ValueError, match="max_seq_len=3, not 4"):
        rl.compile(program, VOCAB, 4, analysis=analysis)
    with pytest.raises(TypeError, match="must be an Analysis"):
        Plan(program, VOCAB, N, analysis={})


def test_merged_views_align_with_value_sets():
    """map_outputs, sequence_map_outputs and predicate are aligned with value_sets, read
    at each merged value's representative (the typed value value_sets holds)."""
    inner = Map(lambda x: {"a": 1, "b": 1.0, "c": True, "d": None}[x], tokens).named("inner")
    mapped = Map(lambda v: 10 // (v - 1), inner, simplify=False).named("mapped")  # v == 1
    pair = SequenceMap(lambda v, i: (v, i), inner, indices).named("pair")
    select = Select(inner, indices, _leq()).named("sel")
    program = SelectorWidth(select) + SequenceMap(lambda a, b: 0, mapped, pair)
    analysis = analyze(program, "abcd", 2)
    values = analysis.value_sets[inner]
    assert values == (None, 1)  # 1, 1.0 and True merge into the first typed value
    assert len(analysis.typed_values[inner]) == 4
    rep = analysis.representatives(inner)
    assert [analysis.typed_values[inner][c] for c in rep.tolist()] == [None, 1]
    merged = analysis.merged_index(inner)
    assert [values[m] for m in merged.tolist()] == [
        None if v is None else 1 for v in analysis.typed_values[inner]]
    assert analysis.map_outputs(mapped) == (None, RAISED)
    outputs = analysis.sequence_map_outputs(pair)
    assert outputs.shape == (2, 2) and outputs[0, 0] is None and outputs[1, 1] == (1, 1)
    truth = analysis.predicate(select)  # [queries (indices), keys (inner)]
    assert truth.tolist() == [[False, False], [False, True]]
    table = analysis.select_table(select)  # [typed keys, typed queries]
    none_code = analysis.tables[inner].code(None)
    assert (table[none_code] == PRED_ERROR).all()
    assert set(np.unique(table).tolist()) <= {PRED_FALSE, PRED_TRUE, PRED_ERROR}
    assert RAISED_CODE in analysis.luts[mapped].tolist()


def _leq():
    """A callable predicate (not a Comparison): key <= query."""
    return lambda key, query: key <= query


def test_tables_are_built_once_when_threads_ask_at_once():
    """A lazily built table is computed once even when several threads ask for it."""
    p = Counted(lambda k, q: k == q)
    select = Select(tokens, tokens, p)
    program = SelectorWidth(select)
    analysis = analyze(program, range(40), 4)
    barrier = threading.Barrier(4)

    def ask():
        barrier.wait()
        analysis.select_table(select)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(p.calls.values()) == 40 * 40


# ------------------------------------------------------------------- fused Maps


def test_fused_map_calls_outer_once_per_inner_result():
    """Map(g, Map(f, s)) tables f over s and g over f's distinct results (evaluate's
    answer, one call each); g sees the None that f returns, not a None input."""
    f = Counted(lambda x: None if x == "a" else len(x))
    g = Counted(lambda y: y is None or y > 1)
    program = Map(g, Map(f, tokens))
    vocab = ("a", "b", "cc", "dd")
    analysis = analyze(program, vocab, 2)
    assert dict(f.calls) == {(x,): 1 for x in vocab}
    assert dict(g.calls) == {(None,): 1, (1,): 1, (2,): 1}
    plan = Plan(program, vocab, 2, analysis=analysis)
    inputs = [["a", "b"], ["cc"], ["dd", "a"]]
    got = plan.run(inputs)
    assert got == [rl.evaluate(program, x) for x in inputs] == [[True, False], [True],
                                                                 [True, True]]


def test_fused_map_of_an_unhashable_intermediate_calls_the_fused_function():
    """An intermediate list (made and unmade inside the fused Map) is not a table value:
    the fused function is called on the input values instead."""
    program = Map(tuple, Map(lambda x: [x, x], tokens))
    analysis = analyze(program, "ab", 2)
    assert set(analysis.value_sets[program]) == {("a", "a"), ("b", "b")}
    assert rl.interpreter.evaluate_batch(program, [["a", "b"]]) == [[("a", "a"), ("b", "b")]]


def test_fused_map_notes_errors_with_the_input_value():
    """Where the outer function raises, the dropped value names the input of the Map."""
    program = Map(lambda y: 1 // y, Map(lambda x: x - 1, tokens))
    analysis = analyze(program, [1, 2], 2)
    assert analysis.dropped[program] == (
        "f(1) raised ZeroDivisionError: integer division or modulo by zero; value dropped",)
    assert analysis.map_outputs(program) == (RAISED, 1)


# ----------------------------------------------------------- plan immutability


def _snapshot(plan):
    state = plan._state
    return ({k: id(v) for k, v in vars(plan).items()},
            {name: dict(getattr(state, name)) for name in
             ("tables", "luts", "remaps", "defaults", "runs", "numeric", "floats")},
            dict(plan._selectors))


def test_runs_do_not_change_the_plan_even_when_tables_grow():
    """A run that meets means outside the tables, keeps every node and runs in several
    threads at once leaves the plan exactly as it was built."""
    mean = Aggregate(Select(indices, indices, _leq()), Map(lambda x: x * 3, tokens))
    prog = Map(lambda m: round(m, 3), mean.named("mean"), simplify=False)
    plan = Plan(prog, [1, 2, 5], 6)
    before = _snapshot(plan)
    rng = np.random.default_rng(0)
    inputs = [rng.choice([1, 2, 5], size=int(rng.integers(1, 7))).tolist() for _ in range(200)]
    want = [rl.evaluate(prog, x) for x in inputs]
    results = [None] * 4

    def run(i):
        results[i] = plan.run(inputs)
        plan.run_arrays(*plan.encode(inputs), outputs="all")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [want] * 4
    grown = plan.run_arrays(*plan.encode(inputs), outputs=["mean"])["mean"].table
    assert len(grown) > len(plan.table("mean"))  # the run's table grew, the plan's did not
    after = _snapshot(plan)
    assert after[0] == before[0] and after[2] == before[2]
    for name, table in before[1].items():
        assert after[1][name].keys() == table.keys(), name
        assert all(after[1][name][k] is v for k, v in table.items()), name


# ------------------------------------------------------------------- rule tables


def test_every_node_kind_has_a_rule_in_every_pass():
    """Each node kind the evaluator knows has one rule in the analysis's table, in the
    plan's (what it takes from the analysis) and in the run's (its kernel)."""
    from rasplang import nodes
    from rasplang.evaluator import _RULES as EVALUATE
    from rasplang.inference import RULES as ANALYSE
    from rasplang.interpreter.chunk import _RULES as RUN
    from rasplang.interpreter.state import _ENSURE, _INITIAL

    kinds = set(EVALUATE)
    concrete = {cls for cls in vars(nodes).values() if isinstance(cls, type)
                and issubclass(cls, nodes.RASPExpr) and not cls.__subclasses__()
                and not cls.__name__.startswith("_")}
    assert kinds == concrete
    for name, table in (("analysis", ANALYSE), ("plan", _INITIAL), ("run", RUN)):
        assert set(table) == kinds, name
    assert set(_ENSURE) <= kinds


# ------------------------------------------------------------- tables are exact


def _outcome(f, *args):
    if any(a is None for a in args):
        return None
    try:
        return f(*args)
    except Exception:
        return RAISED


def _pairs_meet(analysis, node):
    """``[len(fst table), len(snd table)]`` bool: the pairs of input values some cell
    holds together (by the cell sets; fst and snd apart)."""
    fst, snd = analysis.places[node.fst], analysis.places[node.snd]
    ids_a, ids_b = np.broadcast_arrays(fst.ids, snd.ids)
    reached = (ids_a >= 0) & (ids_b >= 0)
    a = fst.rows[ids_a[reached]].astype(np.int64)  # [cells, Tx]
    b = snd.rows[ids_b[reached]].astype(np.int64)
    return (a.T @ b) > 0


def _assert_tables_match_functions(analysis):
    """Every lookup array decodes to the function applied to the typed values."""
    from rasplang.tables import predicate_code
    from rasplang.values import typed_key

    def same(code, table, want):
        got = RAISED if code == RAISED_CODE else table.values[code]
        if want is RAISED or got is RAISED:
            return got is want
        return (got != got and want != want) or typed_key(got) == typed_key(want)

    for node in analysis.nodes:
        if isinstance(node, Map):
            xs, table = analysis.typed_values[node.inner], analysis.tables[node]
            for x, code in zip(xs, analysis.luts[node].tolist()):
                assert same(code, table, _outcome(node.f, x)), (analysis.labels[node], x)
        elif isinstance(node, (SequenceMap, rl.LinearSequenceMap)):
            xs, ys = analysis.typed_values[node.fst], analysis.typed_values[node.snd]
            table, lut = analysis.tables[node], analysis.luts[node]
            assert lut.shape == (len(xs), len(ys))
            meets = _pairs_meet(analysis, node)
            for (i, x), (j, y) in itertools.product(enumerate(xs), enumerate(ys)):
                if node.fst is node.snd and i != j:  # one SOp twice: only f(v, v) occurs
                    assert int(lut[i, j]) == RAISED_CODE
                    continue
                code = int(lut[i, j])
                if not meets[i, j] and code == RAISED_CODE:  # no cell holds both: dropped
                    continue
                assert same(code, table, _outcome(node.f, x, y)), (x, y)
        elif isinstance(node, Select):
            keys, queries = analysis.typed_values[node.keys], analysis.typed_values[node.queries]
            want = [[predicate_code(node.predicate, k, q) for q in queries] for k in keys]
            assert analysis.select_table(node).tolist() == want


@pytest.mark.parametrize("name", sorted(lib.PROGRAMS))
def test_library_tables_match_their_functions(name):
    """For every library program, each Map, SequenceMap and Select table holds what its
    function gives on the typed values (numpy fast paths included)."""
    entry = lib.PROGRAMS[name]
    _assert_tables_match_functions(analyze(entry.build(6), entry.vocab, 6))


def test_linear_sequence_map_with_none_takes_the_fast_path_exactly():
    """A numerical LinearSequenceMap whose input can be None: None rows give None, the
    rest is computed with numpy, typed as Python types it."""
    prev = numerical(Aggregate(Select(indices, indices, lambda k, q: k == q - 1),
                               numerical(tokens), default=None)).named("prev")
    total = numerical(rl.LinearSequenceMap(tokens, prev, 1, 0.5)).named("total")
    analysis = analyze(total, [0, 2.5, True], 4)
    assert None in analysis.typed_values[total] and analysis.value_sets[total][0] is None
    _assert_tables_match_functions(analysis)
    inputs = [[0, 2.5, True, 0], [True], [2.5, 2.5]]
    assert Plan(total, [0, 2.5, True], 4, analysis=analysis).run(inputs) == [
        rl.evaluate(total, x) for x in inputs]


def test_every_value_raising_upstream_keeps_the_interpreter_exact():
    """A Map whose f raises on every value (an empty table: the plan keeps a None
    placeholder) feeding a SequenceMap and a Select: runs raise evaluate's error."""
    dead = Map(lambda x: 1 // 0, tokens).named("dead")
    program = SelectorWidth(Select(dead, tokens, _eq())) + SequenceMap(
        lambda a, b: 0, dead, indices)
    analysis = analyze(program, "ab", 3)
    assert analysis.typed_values[dead] == ()
    with pytest.raises(rl.EvaluationError, match="ZeroDivisionError"):
        Plan(program, "ab", 3, analysis=analysis).run([["a", "b"]])


def _eq():
    """EQ as a plain callable."""
    return lambda key, query: key == query


def test_the_interpreter_reads_the_table_irs_codes():
    """The codes the kernels read (interpreter/codes.py) are the table IR's."""
    from rasplang import tables
    from rasplang.interpreter import codes

    assert (codes.RAISED, codes.NO_KEY) == (tables.RAISED_CODE, tables.NO_KEY)
    assert (codes.PRED_FALSE, codes.PRED_TRUE, codes.PRED_ERROR) == (
        tables.PRED_FALSE, tables.PRED_TRUE, tables.PRED_ERROR)
