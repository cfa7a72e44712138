"""Corners where a compiled model used to be silently wrong, crash or run out of memory:
each now compiles exactly (checked against `evaluate` on every input) or is refused
with an error naming the node."""

from __future__ import annotations

import itertools
import re
import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang import lib, rasp
from rasplang.analysis import AnalysisError, UnsupportedProgramError, ValueSetTooLarge
from rasplang.backend import CompilerWarning, ModelTooLarge
from rasplang.backend.budget import lower_bound, model_size
from rasplang.backend.build import build_blocks
from rasplang.backend.schedule import schedule
from rasplang.testing import same_output

N = rasp.numerical


def _all_inputs(vocab, max_seq_len):
    for n in range(1, max_seq_len + 1):
        yield from (list(x) for x in itertools.product(vocab, repeat=n))


def _assert_exact(program, vocab, max_seq_len, causal=False, **options):
    """Compile and compare with `evaluate` on every input of the domain."""
    model = rl.compile(program, vocab, max_seq_len, causal=causal, **options)
    inputs = list(_all_inputs(vocab, max_seq_len))
    for x, got in zip(inputs, model.run(inputs)):
        expected = rl.evaluate(program, x, causal=causal)
        assert same_output(got, expected), (x, got, expected)
        # same types too: 5 is not '5.0' downstream
        assert [type(v) for v in got] == [type(v) for v in expected] or any(
            isinstance(v, float) for v in expected), (x, got, expected)
    return model


def _ulp_close(same_sop=False):
    """The issue's program; with two copies of n2 (not one SOp twice) the analysis takes
    their products independently, and n4's value set holds pairs an ulp apart."""
    n1 = rasp.SelectorWidth(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.NEQ))
    n2 = N(rasp.LinearSequenceMap(n1, n1, 2, -1))
    other = n2 if same_sop else N(rasp.LinearSequenceMap(n1, n1, 2, -1))
    n3 = rasp.SequenceMap(lambda x, y: x * y, n2, other)
    n4 = N(rasp.SequenceMap(lambda x, y: x + 0.1 * y, n1, n3))
    return n1, n3, n4


def test_one_sop_twice_only_meets_itself():
    """SequenceMap(f, n2, n2) only ever computes f(v, v): the analysis enumerates just
    those, the value set has no ulp-close pairs, and the issue's program is exact."""
    n1, _, n4 = _ulp_close(same_sop=True)
    for program in (rasp.Map(lambda x: x, n4), rasp.SequenceMap(lambda x, y: x + y, n1, n4)):
        _assert_exact(program, ["a"], 4)


@pytest.mark.parametrize("which", ["map", "sequence_map"])
def test_ulp_close_pairs_no_cell_reaches_are_not_values(which):
    """The issue's ulp-close values came from pairs of n1 and n3 that no (length, index)
    cell holds together: the cells drop them, and the program compiles exactly."""
    n1, _, n4 = _ulp_close()
    program = {"map": rasp.Map(lambda x: x, n4),
               "sequence_map": rasp.SequenceMap(lambda x, y: x + y, n1, n4)}[which]
    _assert_exact(program, ["a"], 4, optimize=False)


def _ulp_close_reached():
    """``0.1 * a + 0.3 * b`` of the counts of "a" and "b": 0.3 (one "b") and
    0.30000000000000004 (three "a"s) are both reached."""
    count_a, count_b = (rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.Full(t),
                                                       rasp.Comparison.EQ)) for t in "ab")
    return count_a, count_b, N(rasp.SequenceMap(lambda x, y: 0.1 * x + 0.3 * y,
                                                count_a, count_b))


@pytest.mark.parametrize("which", ["map", "sequence_map", "causal"])
def test_ulp_close_values_read_by_a_threshold_are_refused(which):
    """Values an ulp apart (0.3 and 0.30000000000000004) cannot be told apart by a model."""
    count_a, count_b, n4 = _ulp_close_reached()
    program = {"map": rasp.Map(lambda x: x, n4),
               "sequence_map": rasp.SequenceMap(lambda x, y: x + y, count_a, n4),
               "causal": rasp.SequenceMap(lambda x, y: x * y, count_b, n4)}[which]
    with pytest.raises(UnsupportedProgramError, match=r"float rounding") as info:
        rl.compile(program, ["a", "b"], 4, causal=which == "causal", optimize=False)
    assert info.value.problems[0][0] == program.label


def test_linear_sequence_map_of_ints_keeps_ints():
    """2 * i + 3 * j of ints is an int, as `evaluate` gives, so str() of it is '5'."""
    lin = N(rasp.LinearSequenceMap(rasp.indices, rasp.indices, 2, 3))
    analysis = rl.analyze(lin, ["a"], 4)
    expected = {v for xs in _all_inputs(["a"], 4) for v in rl.evaluate(lin, xs)}
    assert expected <= set(analysis.typed_values[lin])
    assert all(type(v) is int for v in analysis.typed_values[lin])
    _assert_exact(rasp.Map(str, lin), ["a"], 4)
    _assert_exact(rasp.Map(lambda x: isinstance(x, int), lin), ["a"], 4)


def test_linear_sequence_map_mixed_types_are_typed_per_pair():
    """An int pair gives an int, a pair with a float a float: both types are recorded."""
    x = N(rasp.Map(lambda t: 1.0 if t == "a" else 2, rasp.tokens))
    lin = N(rasp.LinearSequenceMap(x, rasp.indices, 1, 1))
    analysis = rl.analyze(lin, ["a", "b"], 3)
    expected = {(type(v), v) for xs in _all_inputs(["a", "b"], 3) for v in rl.evaluate(lin, xs)}
    assert expected <= {(type(v), v) for v in analysis.typed_values[lin]}
    twins = r"can be 2 or 2\.0 \(equal values told apart by type or sign"
    with pytest.raises(UnsupportedProgramError, match=twins):
        rl.compile(rasp.Map(str, lin), ["a", "b"], 3)


def test_means_near_float_overflow_are_refused():
    """A mean of values around 1e300 overflowed to NaN; now the node is refused."""
    big = N(rasp.Map(lambda t: 1e300 if t == "a" else 3e300, rasp.tokens)).named("big")
    mean = N(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ), big,
                            default=0)).named("mean")
    with pytest.raises(UnsupportedProgramError, match=r"big: .*MAX_NUMERICAL_MAGNITUDE"):
        rl.compile(mean, ["a", "b"], 3)


def test_huge_ints_numerical_refused_categorical_exact():
    """10**400 cannot be a number in a model, but is a fine categorical value."""
    with pytest.raises(UnsupportedProgramError, match=r"huge: .*can take 1000000"):
        rl.compile(N(rasp.Map(lambda t: 10**400, rasp.tokens)).named("huge"), ["a"], 2)
    _assert_exact(rasp.Map(lambda t: 10**400 if t == "a" else 1, rasp.tokens), ["a", "b"], 3)


def test_select_on_always_none_queries_is_refused():
    """A Select whose queries are always None makes `evaluate` raise: refused, not a crash."""
    queries = rasp.Map(lambda x: None, rasp.tokens).named("nothing")
    program = rasp.Aggregate(rasp.Select(rasp.tokens, queries, rasp.Comparison.EQ), rasp.tokens)
    with pytest.raises(UnsupportedProgramError, match=r"queries 'nothing' can only be None"):
        rl.compile(program, ["a", "b"], 3)


def test_nan_values_are_refused():
    """NaN is not equal to itself, so no model output can agree with it."""
    for program in (rasp.Map(lambda x: float("nan"), rasp.tokens).named("nan"),
                    N(rasp.Map(lambda x: float("nan"), rasp.tokens)).named("nan")):
        with pytest.raises(UnsupportedProgramError, match=r"nan: it can take NaN"):
            rl.compile(program, ["a", "b"], 3)


def test_unhashable_results_name_the_node():
    """A Map returning a list is an AnalysisError naming the node, not a bare TypeError."""
    program = rasp.Map(lambda x: [1, 2], rasp.tokens).named("listy")
    with pytest.raises(AnalysisError, match=r"Map 'listy': f\('a'\) returned \[1, 2\] \(a list\)"):
        rl.compile(program, ["a", "b"], 3)


@pytest.mark.parametrize("encoding", [N, rasp.categorical])
def test_maps_of_an_always_none_numerical_sop_compile_exactly(encoding):
    """A numerical input that is always None used to crash the MLP builders."""
    nothing = N(rasp.Map(lambda x: None, rasp.tokens))
    always_none = N(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ),
                                   nothing))
    _assert_exact(encoding(rasp.Map(lambda x: x + 1, always_none)), ["a", "b"], 3)
    _assert_exact(rasp.SequenceMap(lambda x, y: x, always_none, rasp.tokens), ["a", "b"], 3)


def test_argument_types_are_checked():
    """causal must be a bool and max_seq_len an int (True is not a length)."""
    with pytest.raises(TypeError, match="causal must be True or False, got 'yes'"):
        rl.compile(lib.make_hist(), ["a"], 3, causal="yes")
    with pytest.raises(ValueError, match="max_seq_len must be a positive integer, got True"):
        rl.compile(lib.make_hist(), ["a"], True)
    with pytest.raises(ValueError, match="max_bytes must be a positive integer"):
        rl.compile(lib.make_hist(), ["a"], 3, max_bytes=0)


def test_huge_model_is_refused_before_building():
    """hist at length 10,000 needs about 9 GiB: refused at once, naming hist."""
    with pytest.raises(ModelTooLarge, match=r"at least 5\.\d+ GiB.*\n  - hist: ") as info:
        rl.compile(lib.make_hist(), ["a", "b"], 10_000)
    assert info.value.problems[0][0] == "hist"
    assert not info.value.size.exact


def test_max_bytes_is_the_limit():
    """The exact size check refuses just below the model's size and passes at it."""
    program, vocab = lib.make_hist(), ["a", "b", "c"]
    size = rl.compile(program, vocab, 5).n_params * 8
    assert rl.compile(program, vocab, 5, max_bytes=size).n_params * 8 == size
    with pytest.raises(ModelTooLarge, match=r"over max_bytes=") as info:
        rl.compile(program, vocab, 5, max_bytes=size - 1)
    assert info.value.size.exact and info.value.size.bytes == size


def test_huge_sequence_map_table_is_refused_early():
    """reverse at 10,000 would call f on 10^8 pairs: refused before the first call."""
    with pytest.raises(ValueSetTooLarge, match=r"'opp_idx'.*MAX_TABLE_PAIRS"):
        rl.compile(lib.make_reverse(rasp.tokens), ["a", "b"], 10_000)


def test_mean_enumeration_is_bounded():
    """The means of many distinct values stop at MAX_MEAN_STEPS, naming the Aggregate."""
    values = N(rasp.Map(lambda i: i * i, rasp.indices))
    mean = N(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ),
                            values, default=0)).named("mean")
    with pytest.raises(ValueSetTooLarge, match=r"'mean'"):
        rl.analyze(mean, ["a"], 300)


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("name", sorted(lib.PROGRAMS))
def test_size_estimates_bound_the_model(name, optimize):
    """`model_size` is the model's exact parameter count; `lower_bound` never exceeds it."""
    entry = lib.PROGRAMS[name]
    program = entry.build(max_seq_len=6)
    analysis = rl.analyze(program, entry.vocab, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rl.compile(program, entry.vocab, 6, optimize=optimize)
    built = build_blocks(analysis, causal=False, bos="BOS", mlp_exactness=100,
                         optimize=optimize)
    assert model_size(analysis, built, schedule(built.blocks, program)).parameters == \
        model.n_params
    assert lower_bound(analysis, optimize).parameters <= model.n_params


@pytest.mark.parametrize("program", [rasp.Full([1]), rasp.ConstantSOp([(1, [2])])],
                         ids=["full", "constant"])
def test_unhashable_constants_name_the_node(program):
    """A Full or ConstantSOp of a list is an AnalysisError naming it, not a TypeError."""
    with pytest.raises(AnalysisError, match=rf"'{program.label}': its value .* is not hashable"):
        rl.analyze(program, ["a"], 2)


def test_select_table_limit(monkeypatch):
    """A Select whose value table exceeds MAX_SELECT_ENTRIES is refused before it is built."""
    from rasplang.backend.chambers import selector

    monkeypatch.setattr(selector, "MAX_SELECT_ENTRIES", 15)
    sel = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ).named("same")
    with pytest.raises(UnsupportedProgramError, match=r"Select 'same': .*4 query values x 4 key"):
        rl.compile(rasp.Aggregate(sel, rasp.tokens), ["a"], 4)
    monkeypatch.setattr(selector, "MAX_SELECT_ENTRIES", 16)
    rl.compile(rasp.Aggregate(sel, rasp.tokens), ["a"], 4)


def test_conversion_is_reserved_before_it_is_built():
    """The one-hot conversion of a numerical SOp counts against max_bytes before its
    weights exist, naming the node that reads it."""
    num = N(rasp.Map(lambda i: i / 7, rasp.indices)).named("num")
    program = N(rasp.SequenceMap(lambda x, y: x, num, rasp.tokens)).named("reader")
    analysis = rl.analyze(program, ["a"], 30)
    bound = lower_bound(analysis)
    assert bound.shares["num:categorical"][0] >= 2 * 30 * 59  # 30 directions, 59 units
    with pytest.raises(ModelTooLarge, match=r"\n  - num:categorical: .*59 hidden units"):
        rl.compile(program, ["a"], 30, max_bytes=bound.bytes - 1, optimize=False)
    limit = 2 * 30 * 59 * 8 - 1  # the conversion's own weights, one byte short
    with pytest.raises(ModelTooLarge, match=r"reader: .*hidden units reading"):
        build_blocks(analysis, causal=False, bos="BOS", mlp_exactness=100, max_bytes=limit)


def test_aggregate_read_by_a_node_without_values():
    """A Map that raises on every value feeds a LinearSequenceMap after a categorical
    Aggregate (a fuzz case): the model compiles (every input raises in evaluate too),
    with a warning naming the node that never has a value (the Aggregate's selector,
    exact per cell, selects no key: it is not spread); verify checks nothing, so its
    verdict is not ok."""
    vocab = [1e300, -1e300, 1.0]
    n1 = rl.Map(lambda x: 1e300 * len(str(x)), rl.length)
    n2 = rl.Aggregate(rl.Select(n1, rl.length, lambda k, q: abs(k - q) < 0.15), rl.length,
                      default=0.5)
    n3 = rl.Map(lambda x: 10**400 + len(str(x)), n2)
    n4 = rl.LinearSequenceMap(n1, n3, 1 / 3, 10**400).named("overflows")
    program = rl.numerical(rl.LinearSequenceMap(n4, n4, 2, 0.5))
    for optimize in (True, False):
        with pytest.warns(CompilerWarning) as caught:
            model = rl.compile(program, vocab, 2, optimize=optimize)
        messages = sorted(str(w.message) for w in caught)
        assert len(messages) == 1, messages
        assert re.match(r"overflows: no value on any input \(f\(1e\+300, 1000.*\.\.\.\); "
                        r"evaluate raises on every input", messages[0]), messages
        report = rl.verify(program, vocab, 2, model=model, progress=False)
        assert report.agrees and report.checked == 0 and report.skipped > 0, report
        assert not report.ok and "nothing checked" in report.summary()


@pytest.mark.parametrize("optimize", [True, False])
def test_amplified_leakage_compiles_with_colder_heads(optimize):
    """A prefix mean multiplied by 3e8 afterwards: at the default coldness its leakage
    bound, amplified, is over OUTPUT_TOLERANCE; compile builds the heads colder and the
    model is exact on every input (and in float32 where it claims float32)."""
    from rasplang.backend.build import OUTPUT_TOLERANCE
    from rasplang.backend.chambers.attention import COLD_LEAKAGE_TARGET

    x = N(rasp.Map(lambda t: 1 - t, rasp.tokens))
    mean = N(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.GEQ),
                            x, default=0))
    program = N(rasp.Map(lambda v: -300 * v + 1, N(rasp.Map(lambda v: v * 2 ** 20, mean))))
    vocab, n = [0, 1], 6
    analysis = rl.analyze(program, vocab, n)
    options = dict(causal=False, bos="BOS", mlp_exactness=100.0, optimize=optimize)
    warm = build_blocks(analysis, **options)
    assert any(f"OUTPUT_TOLERANCE={OUTPUT_TOLERANCE}" in why for _, why in warm.problems)
    assert not build_blocks(analysis, **options, leakage=COLD_LEAKAGE_TARGET).problems
    model = rl.compile(program, vocab, n, optimize=optimize)
    dtypes = [np.float64] if model.config.float64_only else [np.float64, np.float32]
    for dtype in dtypes:
        report = rl.verify(program, vocab, n, model=model, exhaustive=True, dtype=dtype)
        assert report.ok and report.checked == 2 ** (n + 1) - 2, report.summary()
