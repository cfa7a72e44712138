"""evaluate_batch on awkward values: unhashable results, NaN, -0.0, tuples holding NaN,
very wide or non-finite means, and tokens outside the vocabulary.

Each either equals `rasplang.evaluate` exactly (floats bit for bit, NaN where NaN) or
is refused with an error that names the node or the token's position.
"""

from __future__ import annotations

import itertools
import math

import pytest

import rasplang as rl
from rasplang import (
    Aggregate,
    Comparison,
    Map,
    Select,
    SelectorWidth,
    SequenceMap,
    categorical,
    indices,
    numerical,
    tokens,
)
from rasplang.analysis import AnalysisError
from rasplang.interpreter import evaluate_batch

BACKENDS = ["numpy", "numba"]
VOCAB = (0, 1, 2)
INPUTS = [list(x) for n in range(5) for x in itertools.product(VOCAB, repeat=n)]


def _bits(value):
    """A key equal for values evaluate would print alike: floats by their bits (any NaN
    is one NaN), containers element by element, types kept."""
    if isinstance(value, float):
        return (float, "nan" if math.isnan(value) else value.hex())
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_bits(v) for v in value))
    return (type(value), value)


def _assert_matches_evaluate(program, inputs, backend, vocab=VOCAB, **kw):
    """evaluate_batch equals evaluate on every input, compared with `_bits`."""
    want = [rl.evaluate(program, xs, **kw) for xs in inputs]
    got = evaluate_batch(program, inputs, vocab=vocab, max_seq_len=max(map(len, inputs)),
                         backend=backend, **kw)
    for xs, g, w in zip(inputs, got, want, strict=True):
        assert _bits(g) == _bits(w), f"input {xs}: got {g}, evaluate gives {w}"


def _spread():
    """A categorical mean of several different numbers: 0.5, 1.5, ... never in its set."""
    return Aggregate(Select(tokens, tokens, Comparison.LEQ), tokens, default=0)


def _nan_map():
    return Map(lambda x: float("nan") if x == 1 else x, tokens).named("nan_map")


# ------------------------------------------------------------------ unhashable values


@pytest.mark.parametrize("backend", BACKENDS)
def test_map_returning_a_list_names_the_node_and_value(backend):
    """f returning a list on a known value: an AnalysisError naming the Map and the value."""
    program = Map(lambda x: [x, 2], tokens).named("listy")
    assert rl.evaluate(program, [1]) == [[1, 2]]  # evaluate itself does not mind
    with pytest.raises(AnalysisError, match=r"Map 'listy': f\(0\) returned \[0, 2\] \(a "
                                            r"list\), which is not hashable"):
        evaluate_batch(program, [[0, 1]], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_list_met_during_a_run_names_the_node_and_value(backend):
    """A Map or SequenceMap meeting a mean outside the value sets and returning a list
    there: the same AnalysisError, not a bare TypeError from a table."""
    maps = {
        "Map 'listy': f\\(0.5\\) returned \\[0.5\\]":
            Map(lambda x: [x] if isinstance(x, float) else x, _spread()).named("listy"),
        "SequenceMap 'pairy': f\\(0.5, 0\\) returned \\[0.5\\]":
            SequenceMap(lambda x, y: [x] if isinstance(x, float) else x, _spread(),
                        tokens).named("pairy"),
    }
    for message, program in maps.items():
        with pytest.raises(AnalysisError, match=message + r" \(a list\), which is not "
                                                         r"hashable; RASP values must be"):
            evaluate_batch(program, [[0], [0, 1, 2]], vocab=VOCAB, max_seq_len=3,
                           backend=backend)


# ---------------------------------------------------------------------------- NaN


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_categorical_nodes_matches_evaluate(backend):
    """NaN from a Map flows through Maps, SequenceMaps, Selects and a one-key Aggregate
    as in evaluate (NaN != NaN: no table lookup may rely on equality)."""
    nan = _nan_map()
    programs = [
        nan,
        Map(lambda v: v != v, nan),
        nan == 1,
        SequenceMap(lambda a, b: (a, b), nan, tokens),
        SelectorWidth(Select(nan, nan, Comparison.EQ)),  # NaN selects nothing
        SelectorWidth(Select(nan, tokens, lambda k, q: k != k)),
        Aggregate(Select(indices, indices, Comparison.EQ), nan),
        Aggregate(Select(indices, indices, lambda k, q: k == q - 1), nan),  # previous one
    ]
    for program in programs:
        _assert_matches_evaluate(program, INPUTS, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("encode", [categorical, numerical], ids=["categorical", "numerical"])
def test_mean_of_several_nans_raises_evaluates_error(backend, encode):
    """Averaging NaN (or inf) raises in evaluate; evaluate_batch raises the same error,
    naming the node and the first such input."""
    for value, word in ((float("nan"), "NaN"), (math.inf, "Infinity")):
        program = encode(Aggregate(Select(tokens, tokens, Comparison.TRUE),
                                   encode(Map(lambda x, v=value: v if x == 1 else x, tokens)),
                                   default=0)).named("avg")
        inputs = [[0, 2], [2], [0, 1]]
        with pytest.raises(rl.EvaluationError, match=rf"Aggregate 'avg': cannot convert {word} "
                                                     r"to integer ratio.*input 2 of the batch"):
            evaluate_batch(program, inputs, vocab=VOCAB, max_seq_len=2, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tuples_holding_nan_aggregate_as_evaluate_decides(backend):
    """Several selected copies of ``(nan,)`` are "the same" in evaluate only when they hold
    the same NaN object; the interpreter leaves that to evaluate instead of guessing."""
    fresh = Map(lambda x: (float("nan"),) if x == 1 else (x,), tokens)  # new NaN per call
    shared = Map(lambda x: (math.nan,) if x == 1 else (x,), tokens)  # one NaN object
    for values in (fresh, shared):
        program = Aggregate(Select(tokens, tokens, Comparison.EQ), values).named("agg")
        good = [xs for xs in INPUTS if xs.count(1) <= 1 or values is shared]
        _assert_matches_evaluate(program, good, backend)
    with pytest.raises(rl.EvaluationError, match=r"Aggregate 'agg': cannot aggregate several "
                                                 r"different non-numeric values \[\(nan,\), "
                                                 r"\(nan,\)\].*input 1 of the batch"):
        evaluate_batch(Aggregate(Select(tokens, tokens, Comparison.EQ), fresh).named("agg"),
                       [[0, 1], [1, 1]], vocab=VOCAB, max_seq_len=2, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_select_comparing_tuples_holding_nan_is_refused(backend):
    """A Select comparing ``(nan,)`` values depends on object identity in evaluate: the
    interpreter refuses inputs that reach it, naming the Select and the value."""
    values = Map(lambda x: (float("nan"),) if x == 1 else (x,), tokens).named("vals")
    program = SelectorWidth(Select(values, values, Comparison.EQ).named("by_nan"))
    _assert_matches_evaluate(program, [[0, 2, 0], [2]], backend)  # no NaN here: fine
    with pytest.raises(NotImplementedError, match=r"Select 'by_nan' compares \(nan,\) \(a value "
                                                  r"of its keys 'vals'\), whose equality depends "
                                                  r"on object identity"):
        evaluate_batch(program, [[0, 2], [1, 1, 0]], vocab=VOCAB, max_seq_len=3,
                       backend=backend)


# ------------------------------------------------------------------ -0.0 and wide means


@pytest.mark.parametrize("backend", BACKENDS)
def test_minus_zero_keeps_its_sign(backend):
    """-0.0 == 0.0, but evaluate returns f's own zero: so does evaluate_batch."""
    for encode in (categorical, numerical):
        program = encode(Map(lambda x: -0.0 if x == 1 else 0.0, tokens))
        _assert_matches_evaluate(program, INPUTS, backend)
    tiny = Map(lambda x: [0.0, -5e-324, 5e-324][x], tokens)  # means round to -0.0 or 0.0
    program = numerical(Aggregate(Select(tokens, tokens, Comparison.TRUE), numerical(tiny),
                                  default=0))
    _assert_matches_evaluate(program, INPUTS, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_means_of_values_too_wide_for_integer_sums_are_exact(backend, causal):
    """1e-300 next to 1e300 has no two-limb integer form: those means are re-evaluated,
    exactly (bit for bit), instead of summed in floats."""
    wide = (1e-300, 1.0, 1e300)
    program = numerical(Aggregate(Select(indices, indices, Comparison.LEQ), numerical(tokens),
                                  default=0))
    inputs = [list(x) for n in range(4) for x in itertools.product(wide, repeat=n)]
    _assert_matches_evaluate(program, inputs, backend, vocab=wide, causal=causal)


# ------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("token", ["BOS", "PAD", "c", 3])
def test_tokens_outside_the_vocabulary_are_refused_with_their_position(token):
    """The compiler's BOS and PAD, or any other token outside vocab: a ValueError naming
    the token, its sequence and its position (the interpreter reserves no token)."""
    with pytest.raises(ValueError, match=rf"token {token!r} at \(sequence 1, position 0\) "
                                         r"is not in the vocabulary \['a', 'b'\]"):
        evaluate_batch(tokens, [["a"], [token, "a"]], vocab="ab", max_seq_len=3)


def test_bos_is_an_ordinary_token_when_the_vocabulary_holds_it():
    """With the vocabulary inferred from the inputs, "BOS" is a token like any other, as
    in evaluate."""
    assert evaluate_batch(tokens, [["BOS", "a"]]) == [rl.evaluate(tokens, ["BOS", "a"])]


def test_none_token_is_refused_with_its_position():
    """None is no token: evaluate_batch names where it is, also with an inferred vocab."""
    for kw in ({}, {"vocab": "ab", "max_seq_len": 3}):
        with pytest.raises(ValueError, match=r"token None at \(sequence 1, position 1\)"):
            evaluate_batch(tokens, [["a"], ["a", None]], **kw)
