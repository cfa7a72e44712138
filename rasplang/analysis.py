"""Program analysis shared by the interpreter and the compiler.

For a program, a vocabulary and a maximum length, `analyze` computes once:

- the nodes in topological order, with labels unique within the program;
- each SOp's encoding and its *value set*: every value the node can take on any input
  of length 1..max_seq_len over the vocabulary (sorted deterministically);
- diagnostics: values dropped because ``f`` raised, and categorical Aggregates that
  may see several different values.

Soundness contract: every value `rasplang.evaluate` produces at an SOp is in its value
set, with one documented exception: a *categorical* Aggregate whose selection holds
several different numbers returns their mean, which need not be in its set (the
analysis lists such nodes in ``spread_aggregates``; the interpreter still returns the
right value and the compiler refuses or verifies them).

Numerical Aggregates are exact: the set holds the mean of every multiset of 1 to
max_seq_len input values (computed with fractions), plus the default. tracr keeps only
``{x / w}``, which makes its compiled models silently wrong downstream.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

from rasplang.graph import topological_order, unique_labels
from rasplang.nodes import (
    Aggregate,
    Comparison,
    ConstantSelector,
    ConstantSOp,
    Encoding,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    Selector,
    SelectorAnd,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
    Value,
    get_encoding,
)

#: Largest value set the analysis builds for one node by enumeration in Python
#: (numerical Aggregate means, Map and SequenceMap results). Past it, `analyze` raises
#: `ValueSetTooLarge` naming the node.
MAX_VALUE_SET_SIZE = 100_000
#: Largest number of input pairs a numerical LinearSequenceMap enumerates (with numpy:
#: the sum of two independent means can take about a million values at length 64).
MAX_LINEAR_PAIRS = 20_000_000
#: Largest number of input pairs on which the analysis calls a SequenceMap's ``f``
#: (checked before the first call, so a huge table is refused in well under a second).
MAX_TABLE_PAIRS = 4_000_000
#: Largest number of exact additions the analysis spends on one numerical Aggregate's
#: means (a few seconds of work); past it, `ValueSetTooLarge` names the node.
MAX_MEAN_STEPS = 5_000_000
#: Largest magnitude of a value a compiled model holds as a number (a numerical SOp, or
#: the input of a numerical Aggregate or LinearSequenceMap): float64 holds every integer
#: up to it exactly, and means and weighted sums of such values stay far from overflow.
MAX_NUMERICAL_MAGNITUDE = 2**53


class AnalysisError(ValueError):
    """The program cannot be analysed for this vocabulary and length."""


class ValueSetTooLarge(AnalysisError):
    """A node's value set would exceed `MAX_VALUE_SET_SIZE`."""


class UnsupportedProgramError(NotImplementedError):
    """The program contains constructs that cannot be compiled.

    ``problems`` lists ``(label, reason)`` for every offending node.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {label}: {reason}" for label, reason in self.problems)
        super().__init__(f"cannot compile {len(self.problems)} node(s):\n{lines}")


_PLAIN_NUMBERS = frozenset({int, float, bool})


def sort_key(value: Any) -> tuple[int, Any]:
    """A total order over mixed values: None, then numbers, then str, then the rest."""
    if type(value) in _PLAIN_NUMBERS:  # fast path for the large numeric sets
        return (1, value)
    if value is None:
        return (0, 0)
    if isinstance(value, numbers.Real):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, repr(value))


def sorted_values(values: Iterable[Value]) -> tuple[Value, ...]:
    """Deduplicate (by ``==``/hash, as a set does) and sort with `sort_key`."""
    unique = set(values)
    if all(type(v) in _PLAIN_NUMBERS for v in unique):
        return tuple(sorted(unique))  # the same order, without a key per value
    return tuple(sorted(unique, key=sort_key))


def typed_key(value: Value) -> Any:
    """A key equal for two values only if they are equal, of the same type and print the
    same, also inside tuples: ``1``, ``1.0``, ``True`` are apart, and so are ``-0.0`` and
    ``0.0``, and ``(1, 'a')`` and ``(1.0, 'a')``."""
    if type(value) is tuple:
        return (tuple, tuple(typed_key(v) for v in value))
    if is_negative_zero(value):
        return (type(value), value, "-")
    return (type(value), value)


def is_negative_zero(value: Value) -> bool:
    """Whether ``value`` is the float ``-0.0``."""
    return isinstance(value, float) and value == 0 and math.copysign(1.0, value) < 0


def distinct_typed(values: Iterable[Value]) -> tuple[Value, ...]:
    """Deduplicate keeping values that are equal but of different types (1, 1.0, True)."""
    return tuple({typed_key(v): v for v in values}.values())


def type_collisions(values: Iterable[Value]) -> tuple[tuple[Value, ...], ...]:
    """Groups of values that compare equal but differ in type, e.g. ``(0, False)``."""
    groups: dict[Value, list[Value]] = {}
    for v in distinct_typed(values):
        groups.setdefault(v, []).append(v)
    return tuple(tuple(g) for g in groups.values() if len(g) > 1)


@attrs.frozen
class Analysis:
    """What is known statically about a program for one vocabulary and length."""

    program: RASPExpr
    vocab: tuple[Value, ...]
    max_seq_len: int
    nodes: tuple[RASPExpr, ...]
    labels: dict[RASPExpr, str]
    value_sets: dict[SOp, tuple[Value, ...]]
    encodings: dict[SOp, Encoding]
    dropped: dict[SOp, tuple[str, ...]]
    spread_aggregates: tuple[SOp, ...]
    #: SOps that can take values equal under ``==`` but of different types (``1``,
    #: ``1.0``, ``True``): one value in ``value_sets``, so one direction (categorical) or
    #: one number (numerical) in a compiled model. `validate` refuses consumers whose
    #: function tells them apart.
    type_collisions: dict[SOp, tuple[tuple[Value, ...], ...]] = attrs.field(factory=dict)
    #: Each SOp's values without merging equal values of different types.
    typed_values: dict[SOp, tuple[Value, ...]] = attrs.field(factory=dict)

    def value_set(self, node: SOp) -> tuple[Value, ...]:
        """The sorted values ``node`` can take."""
        return self.value_sets[node]

    def node(self, label: str) -> RASPExpr:
        """The node of the program with this (unique) label."""
        for node, node_label in self.labels.items():
            if node_label == label:
                return node
        raise KeyError(f"no node labelled {label!r}; labels are {sorted(self.labels.values())}")

    @property
    def diagnostics(self) -> list[str]:
        """Human-readable notes: dropped values and spread categorical Aggregates."""
        notes = [
            f"{self.labels[node]}: {msg}" for node, msgs in self.dropped.items() for msg in msgs
        ]
        notes += [
            f"{self.labels[node]}: categorical Aggregate may select several values"
            for node in self.spread_aggregates
        ]
        notes += [
            f"{self.labels[node]}: values {list(group)} compare equal but differ in type or sign"
            for node, groups in self.type_collisions.items() for group in groups
        ]
        return notes


class _Inference:
    def __init__(self, vocab: tuple[Value, ...], max_seq_len: int, labels: dict):
        self.vocab = vocab
        self.max_seq_len = max_seq_len
        self.labels = labels
        self.sets: dict[SOp, tuple[Value, ...]] = {}
        self.typed: dict[SOp, tuple[Value, ...]] = {}
        self.dropped: dict[SOp, list[str]] = {}
        self.spread: list[SOp] = []

    def check_size(self, node: SOp, size: int) -> None:
        if size > MAX_VALUE_SET_SIZE:
            raise ValueSetTooLarge(
                f"{type(node).__name__} {self.labels[node]!r}: its value set would have "
                f"{size} or more values (limit MAX_VALUE_SET_SIZE={MAX_VALUE_SET_SIZE})"
            )

    def apply(self, node: SOp, fn, args: Iterable[tuple[Value, ...]]) -> tuple[Value, ...]:
        """``fn`` over every argument tuple: the distinct (typed) results."""
        out: dict[Any, Value] = {}
        drops = self.dropped.setdefault(node, [])
        for arg in args:
            if None in arg:
                out[typed_key(None)] = None
                continue
            try:
                value = fn(*arg)
            except Exception as exc:  # evaluate would raise there too: drop, note it
                if len(drops) < 10:
                    shown = ", ".join(repr(a) for a in arg)
                    drops.append(f"f({shown}) raised {type(exc).__name__}: {exc}; value dropped")
                continue
            try:
                out[typed_key(value)] = value
            except TypeError:
                shown = ", ".join(repr(a) for a in arg)
                raise AnalysisError(
                    f"{type(node).__name__} {self.labels[node]!r}: f({shown}) returned "
                    f"{value!r} (a {type(value).__name__}), which is not hashable; RASP values "
                    "must be hashable (use a tuple instead of a list)") from None
        if not drops:
            del self.dropped[node]
        self.check_size(node, len(out))
        return tuple(out.values())

    def linear(self, node: LinearSequenceMap) -> tuple[Value, ...] | None:
        """Numerical LinearSequenceMap of plain numbers: all sums at once with numpy.

        Values keep the types ``fst_fac * x + snd_fac * y`` has in Python: a pair of ints
        (or bools) with integer factors gives an int, summed exactly in int64; any float
        in the pair gives a float, and float64 products and sums round as Python's do
        (every int involved is below 2**53, so converting it is exact). Anything else
        (other number types, larger ints) takes the general path. The set can be large
        (two independent means).
        """
        xs, ys = self.typed[node.fst], self.typed[node.snd]
        a, b = node.fst_fac, node.snd_fac
        if get_encoding(node) is not Encoding.NUMERICAL or not all(
            type(v) in _PLAIN_NUMBERS for v in (*xs, *ys, a, b)
        ) or max(abs(a), abs(b)) >= 2**53:
            return None
        if len(xs) * len(ys) > MAX_LINEAR_PAIRS:
            raise ValueSetTooLarge(
                f"LinearSequenceMap {self.labels[node]!r}: {len(xs)} x {len(ys)} input "
                f"values exceed MAX_LINEAR_PAIRS={MAX_LINEAR_PAIRS}"
            )
        xi, xf = _split_ints(xs)
        yi, yf = _split_ints(ys)
        big = max(map(abs, (*xi, *yi)), default=0)
        if big >= 2**53 or max(abs(a), abs(b)) * big >= 2**53:
            return None  # ints past float precision: the general path computes them

        def sums(fst: list, snd: list, dtype: type) -> list[Value]:
            if not fst or not snd:
                return []
            outer = np.add.outer(a * np.asarray(fst, dtype), b * np.asarray(snd, dtype))
            return np.unique(outer).tolist()

        if type(a) is float or type(b) is float:
            return tuple(sums(list(xs), list(ys), np.float64))
        floats = sums(list(xs), yf, np.float64) + sums(xf, yi, np.float64)
        return distinct_typed([*sums(xi, yi, np.int64), *floats])

    def infer(self, node: SOp) -> tuple[Value, ...]:
        if isinstance(node, TokensType):
            return sorted_values(self.vocab)
        if isinstance(node, IndicesType):
            return tuple(range(self.max_seq_len))
        if isinstance(node, LengthType):
            return tuple(range(1, self.max_seq_len + 1))
        if isinstance(node, SelectorWidth):
            return tuple(range(self.max_seq_len + 1))
        if isinstance(node, Full):
            return (node.fill,)
        if isinstance(node, ConstantSOp):
            return tuple(node.value)  # an unhashable value is refused by the caller
        if isinstance(node, Map):
            return self.apply(node, node.f, ((x,) for x in self.typed[node.inner]))
        if isinstance(node, LinearSequenceMap) and (fast := self.linear(node)) is not None:
            return fast
        if isinstance(node, (SequenceMap, LinearSequenceMap)):
            xs, ys = self.typed[node.fst], self.typed[node.snd]
            if len(xs) * len(ys) > MAX_TABLE_PAIRS:
                raise ValueSetTooLarge(
                    f"{type(node).__name__} {self.labels[node]!r}: f would be called on "
                    f"{len(xs)} x {len(ys)} input pairs (limit MAX_TABLE_PAIRS="
                    f"{MAX_TABLE_PAIRS})"
                )
            return self.apply(node, node.f, ((x, y) for x in xs for y in ys))
        if isinstance(node, Aggregate):
            if get_encoding(node) is Encoding.NUMERICAL:
                return self.numerical_means(node)
            # several selected numbers give their mean, a float even of equal ints
            several = len(self.sets[node.sop]) > 1 or any(
                isinstance(v, numbers.Real) and not isinstance(v, float)
                for v in self.sets[node.sop])
            if several and not _selects_at_most_one(node.selector):
                self.spread.append(node)
            return distinct_typed((*self.typed[node.sop], node.default))
        raise NotImplementedError(f"no value-set rule for {type(node).__name__}")

    def numerical_means(self, node: Aggregate) -> tuple[Value, ...]:
        """Every mean of 1..max_seq_len input values (a multiset), plus the default.

        One selected value is returned as it is (with its type); a mean of several is a
        float, the exact mean rounded once, as `evaluate` computes it. Sums are exact:
        the inputs are scaled to integers by their common denominator.
        """
        typed = self.typed[node.sop]
        numbers_in = [v for v in typed if isinstance(v, numbers.Real)]
        others = [v for v in typed if v is not None and not isinstance(v, numbers.Real)]
        if others:
            raise AnalysisError(
                f"Aggregate {self.labels[node]!r} is numerical but its input can take "
                f"non-numeric values {others[:5]}"
            )
        out: list[Value] = [*typed, node.default]
        # a mean with inf or NaN raises in `evaluate` (no exact value): alone they stay
        finite = [v for v in numbers_in if not isinstance(v, float) or math.isfinite(v)]
        if finite:
            exact = {Fraction(v) for v in finite}
            denominator = math.lcm(*(v.denominator for v in exact))
            scaled = sorted(int(v * denominator) for v in exact)
            sums: set[int] = set(scaled)
            means: set[float] = set()
            steps = 0
            for width in range(2, self.max_seq_len + 1):
                grown: set[int] = set()
                for s in sums:  # check as we go: an explosion stops early
                    grown.update(s + v for v in scaled)
                    steps += len(scaled)
                    if steps > MAX_MEAN_STEPS:
                        raise ValueSetTooLarge(
                            f"Aggregate {self.labels[node]!r}: enumerating the means of up to "
                            f"{self.max_seq_len} of its {len(scaled)} input values takes more "
                            f"than MAX_MEAN_STEPS={MAX_MEAN_STEPS} steps (at width {width}, "
                            f"{len(grown)} sums so far)")
                    self.check_size(node, len(grown) + len(means))
                sums = grown
                # as `evaluate`'s mean rounds: int division rounds the exact quotient once
                for s in sums:
                    with contextlib.suppress(OverflowError):  # past floats: evaluate raises
                        means.add(s / (denominator * width))
                self.check_size(node, len(means) + len(out))
            out += means
        return distinct_typed(out)


def _split_ints(values: Sequence[Value]) -> tuple[list[Value], list[Value]]:
    """Plain numbers split into ints (and bools) and floats."""
    return ([v for v in values if type(v) is not float],
            [v for v in values if type(v) is float])


def _selects_at_most_one(selector: Selector) -> bool:
    """A cheap sufficient test that a selector selects at most one key per query.

    True for ``Select(k, q, EQ)`` whose keys are ``indices`` (all different), and for a
    SelectorAnd with such a side.
    """
    if isinstance(selector, Select):
        return selector.predicate is Comparison.EQ and isinstance(selector.keys, IndicesType)
    if isinstance(selector, SelectorAnd):
        return _selects_at_most_one(selector.fst) or _selects_at_most_one(selector.snd)
    return False


def _check_vocab(vocab: Iterable[Value], max_seq_len: int) -> tuple[Value, ...]:
    if isinstance(vocab, (str, bytes)):
        vocab = list(vocab)
    vocab = tuple(vocab)
    if not vocab:
        raise ValueError("vocab must not be empty")
    if any(v is None for v in vocab):
        raise ValueError("vocab must not contain None")
    if len(set(vocab)) != len(vocab):
        raise ValueError(f"vocab has duplicate tokens: {list(vocab)}")
    if (isinstance(max_seq_len, bool) or not isinstance(max_seq_len, numbers.Integral)
            or max_seq_len < 1):
        raise ValueError(f"max_seq_len must be a positive integer, got {max_seq_len!r}")
    return vocab


def analyze(program: RASPExpr, vocab: Iterable[Value], max_seq_len: int) -> Analysis:
    """Analyse ``program`` for inputs over ``vocab`` of length 1..``max_seq_len``."""
    vocab = _check_vocab(vocab, max_seq_len)
    max_seq_len = int(max_seq_len)
    nodes = topological_order(program)
    labels = unique_labels(nodes)
    inference = _Inference(vocab, max_seq_len, labels)
    encodings: dict[SOp, Encoding] = {}
    collisions: dict[SOp, tuple[tuple[Value, ...], ...]] = {}
    for node in nodes:
        if isinstance(node, SOp):
            typed = inference.infer(node)
            inference.typed[node] = typed
            try:
                inference.sets[node] = sorted_values(typed)
            except TypeError:  # a Full or ConstantSOp of a list, say
                bad = next(v for v in typed if not _hashable(v))
                raise AnalysisError(
                    f"{type(node).__name__} {labels[node]!r}: its value {_short(bad)} (a "
                    f"{type(bad).__name__}) is not hashable; RASP values must be hashable "
                    "(use a tuple instead of a list)") from None
            encodings[node] = get_encoding(node)
            if len(typed) > len(inference.sets[node]):
                collisions[node] = type_collisions(typed)
    return Analysis(
        program=program,
        vocab=vocab,
        max_seq_len=max_seq_len,
        nodes=tuple(nodes),
        labels=labels,
        value_sets=inference.sets,
        encodings=encodings,
        dropped={node: tuple(msgs) for node, msgs in inference.dropped.items()},
        spread_aggregates=tuple(inference.spread),
        type_collisions=collisions,
        typed_values=inference.typed,
    )


def validate(analysis: Analysis) -> list[tuple[str, str]]:
    """Problems that make a program uncompilable whatever the compiler: (label, reason).

    The compiler adds its own rules on top; `raise_if_unsupported` reports them all in
    one error.
    """
    problems: list[tuple[str, str]] = []
    for node in analysis.nodes:
        label = analysis.labels[node]
        if isinstance(node, (ConstantSOp, ConstantSelector)):
            problems.append((label, f"{type(node).__name__} depends on the input length; "
                                    "it exists for testing the evaluator and cannot be compiled"))
        if isinstance(node, SOp):
            problems += [(label, reason) for reason in _value_problems(analysis, node)]
        if isinstance(node, Select):
            for role, child in (("keys", node.keys), ("queries", node.queries)):
                if all(v is None for v in analysis.value_sets[child]):
                    problems.append((label, f"its {role} {analysis.labels[child]!r} can only be "
                                            "None, so evaluate raises on every input"))
        reason = _tells_twins_apart(analysis, node)
        if reason:
            problems.append((label, reason))
    output = analysis.program
    if isinstance(output, SOp) and analysis.encodings[output] is Encoding.CATEGORICAL:
        for group in analysis.type_collisions.get(output, ()):
            twins = " or ".join(map(repr, group))
            problems.append((analysis.labels[output], f"the output can be {twins} (equal values "
                             "told apart by type or sign, one value in a compiled model), so "
                             "the model cannot return the value evaluate returns"))
    return problems


def _value_problems(analysis: Analysis, node: SOp) -> list[str]:
    """Why ``node``'s values cannot be held exactly in a compiled model."""
    values = analysis.value_sets[node]
    if any(isinstance(v, float) and math.isnan(v) for v in values):
        return ["it can take NaN, which is not equal to itself, so no model output can "
                "be checked against it"]
    numerical = analysis.encodings[node] is Encoding.NUMERICAL
    read_as_numbers = [node] if numerical else []
    if numerical and isinstance(node, Aggregate):
        read_as_numbers.append(node.sop)
    problems = []
    if numerical and isinstance(node, LinearSequenceMap):
        read_as_numbers += [node.fst, node.snd]
        for what in ("fst_fac", "snd_fac"):
            factor = getattr(node, what)
            if not abs(factor) <= MAX_NUMERICAL_MAGNITUDE:  # also NaN
                problems.append(f"its {what} {_short(factor)} is not a finite number of "
                                "magnitude at most MAX_NUMERICAL_MAGNITUDE = 2**53")
    for sop in read_as_numbers:
        where = "the node" if sop is node else f"its input {analysis.labels[sop]!r}"
        bad = [v for v in analysis.value_sets[sop]
               if v is not None and not isinstance(v, numbers.Real)]
        if bad:
            problems.append(f"numerical encoding needs numbers, but {where} can take {bad[:5]}")
        elif any(isinstance(v, float) and not math.isfinite(v) for v in analysis.value_sets[sop]):
            problems.append(f"numerical encoding needs finite values, but {where} can be "
                            "infinite")
        elif (big := [v for v in analysis.value_sets[sop]
                      if v is not None and abs(v) > MAX_NUMERICAL_MAGNITUDE]):
            problems.append(f"numerical encoding holds values up to MAX_NUMERICAL_MAGNITUDE "
                            f"= 2**53 in magnitude (where float64 is exact on integers), but "
                            f"{where} can take {_short(big[0])}")
    return problems


def _hashable(value: Value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _short(value: Value, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _number(value: Value) -> tuple[str, Any]:
    return ("value", value)  # a number in the model: 1, 1.0 and True are one value


def _truth(value: Value) -> bool:
    return bool(value)  # a selection: only truthiness counts


def _outcome(fn: Any, *args: Value, key: Any = typed_key) -> Any:
    """``key(fn(*args))``, by default keyed by type so ``1`` and ``True`` differ; an
    exception is an outcome of its own."""
    try:
        value = fn(*args)
    except Exception as exc:
        return (type(exc), None)
    try:
        return key(value)
    except Exception as exc:  # e.g. bool() of an array: evaluate raises too
        return (type(exc), None)


def _tells_twins_apart(analysis: Analysis, node: RASPExpr) -> str | None:
    """Why ``node`` cannot be compiled exactly because it tells equal values apart by type.

    An input that can be both ``1`` and ``True`` (say) has one direction (or one number)
    for both in a compiled model, so a Map, SequenceMap or Select predicate that gives
    different results for them cannot be compiled exactly. Results are compared as the
    model holds them: a numerical node's by value (its output is a number either way,
    and any twins it makes are checked where it is read), a Select's by truth, others
    by value and type.
    """
    if isinstance(node, SOp) and analysis.encodings[node] is Encoding.NUMERICAL:
        key = _number
    else:
        key = _truth if isinstance(node, Select) else typed_key
    if isinstance(node, Map):
        operands = [(node.inner, lambda a: _outcome(node.f, a, key=key))]
    elif isinstance(node, (SequenceMap, LinearSequenceMap)):
        snd_values, fst_values = analysis.typed_values[node.snd], analysis.typed_values[node.fst]
        operands = [
            (node.fst, lambda a: tuple(_outcome(node.f, a, y, key=key) for y in snd_values)),
            (node.snd, lambda b: tuple(_outcome(node.f, x, b, key=key) for x in fst_values)),
        ]
    elif isinstance(node, Select):
        queries, keys = analysis.typed_values[node.queries], analysis.typed_values[node.keys]
        operands = [
            (node.keys, lambda k: tuple(_outcome(node.predicate, k, q, key=key)
                                        for q in queries)),
            (node.queries, lambda q: tuple(_outcome(node.predicate, k, q, key=key)
                                           for k in keys)),
        ]
    else:
        return None
    for child, results in operands:
        for group in analysis.type_collisions.get(child, ()):
            if len({results(v) for v in group}) > 1:
                twins = " or ".join(map(repr, group))
                return (f"its input {analysis.labels[child]!r} can be {twins} (equal values "
                        "told apart by type or sign, one value in a compiled model) and its "
                        "function gives different results for them")
    return None


def raise_if_unsupported(problems: Sequence[tuple[str, str]]) -> None:
    """Raise one `UnsupportedProgramError` listing every problem, if there are any."""
    if problems:
        raise UnsupportedProgramError(problems)
