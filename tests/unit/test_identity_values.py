"""Values that ``==`` compares by object identity: NaN inside tuples, ``object()``, classes
with the default ``__eq__``.

`rasplang.evaluate` makes one object per position; tables and models hold one per value.
Wherever the answer depends on which object a position holds, the interpreter and the
compiler refuse, naming the node (`rasplang.validation.identity_entries`); values that
compare by value keep working in every path.
"""

from __future__ import annotations

import enum
import itertools
import math
from decimal import Decimal
from fractions import Fraction

import pytest

import rasplang as rl
from rasplang import Aggregate, Comparison, Map, Select, SelectorWidth, SequenceMap, indices, tokens
from rasplang.interpreter import evaluate_batch
from rasplang.validation import UnsupportedProgramError
from rasplang.values import identity_dependent

VOCAB = ("a", "b")
INPUTS = [list(x) for n in range(1, 4) for x in itertools.product(VOCAB, repeat=n)]


class ByIdentity:
    """A class with object's default ``==`` and hash: two instances are never equal."""

    def __init__(self, v):
        self.v = v

    def __repr__(self):
        return f"ByIdentity({self.v!r})"


class ByValue(ByIdentity):
    """The same with ``==`` and hash on the field."""

    def __eq__(self, other):
        return isinstance(other, ByValue) and self.v == other.v

    def __hash__(self):
        return hash(self.v)


class Colour(enum.Enum):
    RED = "a"
    BLUE = "b"


def _width(values):
    return SelectorWidth(Select(values, values, Comparison.EQ).named("same"))


def test_identity_dependent_values():
    """NaN inside containers, default-``==`` objects and values unequal to themselves
    compare by identity; plain values, value classes, enum members and None do not."""
    nan = float("nan")
    for value in [(nan, "a"), ((1, (nan,)),), frozenset({nan}), object(), ByIdentity(1),
                  (ByIdentity(1),), Decimal("nan"), lambda: 0]:
        assert identity_dependent(value), value
    for value in [1, 1.5, math.inf, nan, "a", True, None, (1, "a", None), frozenset({1}),
                  ByValue(1), (ByValue(1), 2.0), Colour.RED, Fraction(1, 3), Decimal(1),
                  int, b"x"]:
        assert not identity_dependent(value), value


def test_select_over_tuples_holding_nan_is_refused_by_compile_and_interpreter():
    """``(nan, t)`` made fresh per position equals only itself in evaluate (each query
    selects its own key: [1, 1, 1] on a a b), where a table holds one object per token
    and would count 2 for each a: compile refuses the Select, the interpreter too."""
    y = Map(lambda t: (float("nan"), t), tokens).named("y")
    program = _width(y)
    assert rl.evaluate(program, list("aab")) == [1, 1, 1]
    with pytest.raises(UnsupportedProgramError, match=r"same: compares \(nan, 'a'\) \(a value of "
                                                      r"its keys 'y'\), whose equality depends on "
                                                      r"object identity \(a NaN inside a tuple"):
        rl.compile(program, VOCAB, 3)
    with pytest.raises(NotImplementedError, match=r"Select 'same' compares \(nan, 'a'\)"):
        evaluate_batch(program, [list("aab")], vocab=VOCAB, max_seq_len=3)


@pytest.mark.parametrize("make", [lambda t: object(), ByIdentity], ids=["object", "class"])
def test_select_over_default_equality_objects_is_refused(make):
    """Fresh objects with identity ``==`` never equal another position's: evaluate gives
    [1, 1, 1] on a a b, a table [2, 2, 1]. Both paths refuse, naming the Select."""
    y = Map(make, tokens).named("y")
    program = _width(y)
    assert rl.evaluate(program, list("aab")) == [1, 1, 1]
    with pytest.raises(UnsupportedProgramError, match=r"same: compares .* \(a value of its keys "
                                                      r"'y'\), whose equality depends on object "
                                                      r"identity \(\w+ keeps object's default =="):
        rl.compile(program, VOCAB, 3)
    with pytest.raises(NotImplementedError, match=r"Select 'same' compares .*object identity"):
        evaluate_batch(program, [list("aab")], vocab=VOCAB, max_seq_len=3)
    # TRUE compares nothing: exact in both paths
    every = SelectorWidth(Select(y, y, Comparison.TRUE))
    assert evaluate_batch(every, INPUTS, vocab=VOCAB) == [rl.evaluate(every, x) for x in INPUTS]


def test_sequence_map_of_values_moved_by_an_aggregate_is_refused():
    """An Aggregate moves position i-1's object to position i: ``prev == y`` is False in
    evaluate (two objects) where a table sees one object per token. Both paths refuse."""
    y = Map(lambda t: (float("nan"), t), tokens).named("y")
    prev = Aggregate(Select(indices, indices - 1, Comparison.EQ), y).named("prev")
    program = SequenceMap(lambda a, b: a == b, prev, y).named("same")
    assert rl.evaluate(program, list("aab")) == [None, False, False]
    with pytest.raises(UnsupportedProgramError, match=r"same: receives \(nan, 'a'\) from 'prev' "
                                                      r"next to \(nan, 'a'\) from 'y'"):
        rl.compile(program, VOCAB, 3)
    with pytest.raises(NotImplementedError, match=r"SequenceMap 'same' receives"):
        evaluate_batch(program, [list("aab")], vocab=VOCAB, max_seq_len=3)
    # one identity-dependent side: f cannot compare two such objects, so it is exact
    pair = SequenceMap(lambda a, b: (a[1], b), y, tokens)
    assert evaluate_batch(pair, INPUTS, vocab=VOCAB) == [rl.evaluate(pair, x) for x in INPUTS]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_categorical_aggregate_of_default_equality_objects_follows_evaluate(backend):
    """Several selected copies of ``ByIdentity('a')`` are different values in evaluate (it
    raises); the interpreter leaves "all the same" to evaluate instead of comparing codes."""
    program = Aggregate(Select(tokens, tokens, Comparison.EQ), Map(ByIdentity, tokens))
    program = Map(lambda o: o.v, program.named("agg"))
    one_each = [x for x in INPUTS if len(set(x)) == len(x)]
    assert evaluate_batch(program, one_each, vocab=VOCAB, backend=backend) == \
        [rl.evaluate(program, x) for x in one_each]
    with pytest.raises(rl.EvaluationError, match=r"Aggregate 'agg': cannot aggregate several "
                                                 r"different non-numeric values"):
        evaluate_batch(program, [["a", "b"], ["a", "a"]], vocab=VOCAB, backend=backend)


@pytest.mark.parametrize("make", [
    lambda t: (t, 1.5, None, True), lambda t: frozenset({t, math.inf}), ByValue,
    lambda t: Colour(t), lambda t: (ByValue(t), -math.inf)],
    ids=["tuple", "frozenset", "value-class", "enum", "tuple-of-objects"])
def test_values_compared_by_value_stay_exact(make):
    """Selects and Aggregates over tuples, frozensets (inf included), classes with value
    ``==`` and enum members: the model and the interpreter equal evaluate on every input."""
    y = Map(make, tokens).named("y")
    program = Map(lambda w: w * 10, _width(y))
    want = [rl.evaluate(program, x) for x in INPUTS]
    assert evaluate_batch(program, INPUTS, vocab=VOCAB) == want
    assert rl.compile(program, VOCAB, 3).run(INPUTS) == want
    report = rl.verify(program, VOCAB, 3)
    assert report.ok and report.checked == len(INPUTS), report
