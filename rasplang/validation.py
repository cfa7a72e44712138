"""Validation: what no compiler can build exactly, read from the analysis's tables.

`validate(analysis)` lists ``(label, reason)`` for every such construct; the compiler
adds its own rules and `raise_if_unsupported` reports them all in one error. It calls
no function of the program: whether a function tells twins apart is read from the
lookup arrays the analysis built (`rasplang.tables`).

`identity_entries` is the one rule for values that ``==`` compares by object identity
(`rasplang.values.identity_dependent`): the compiler refuses the nodes it names and the
interpreter marks the same entries as errors, so neither answers where `evaluate`'s
answer depends on which object each position holds.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from rasplang.nodes import (
    Aggregate,
    Comparison,
    ConstantSelector,
    ConstantSOp,
    Encoding,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    SequenceMap,
    SOp,
    Value,
)
from rasplang.tables import RAISED_CODE
from rasplang.values import identity_dependent

if TYPE_CHECKING:
    from rasplang.analysis import Analysis

#: Largest magnitude of a value a compiled model holds as a number (a numerical SOp, or
#: the input of a numerical Aggregate or LinearSequenceMap): float64 holds every integer
#: up to it exactly, and means and weighted sums of such values stay far from overflow.
MAX_NUMERICAL_MAGNITUDE = 2**53


class UnsupportedProgramError(NotImplementedError):
    """The program contains constructs that cannot be compiled.

    ``problems`` lists ``(label, reason)`` for every offending node.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {label}: {reason}" for label, reason in self.problems)
        super().__init__(f"cannot compile {len(self.problems)} node(s):\n{lines}")


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
        reason = identity_problem(node, analysis.typed_values.__getitem__, analysis.labels)
        if reason:
            problems.append((label, reason))
    return problems


def raise_if_unsupported(problems: Sequence[tuple[str, str]]) -> None:
    """Raise one `UnsupportedProgramError` listing every problem, if there are any."""
    if problems:
        raise UnsupportedProgramError(problems)


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
                problems.append(f"its {what} {short(factor)} is not a finite number of "
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
                            f"{where} can take {short(big[0])}")
    return problems


def short(value: Value, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _outcome_classes(analysis: Analysis, node: RASPExpr) -> np.ndarray:
    """``node``'s lookup array with each entry replaced by its class as the model holds
    the result: a Select's truth (an error is its own class); an SOp's value under ``==``
    (``1`` and ``1.0`` are one number, or one direction, in a model). `RAISED_CODE` stays
    (an exception is an outcome of its own)."""
    if isinstance(node, Select):
        return analysis.select_table(node)
    merged = np.append(analysis.merged_index(node), RAISED_CODE)  # [n_typed + 1]
    return merged[analysis.luts[node]]


def _tells_twins_apart(analysis: Analysis, node: RASPExpr) -> str | None:
    """Why ``node`` cannot be compiled exactly because it tells equal values apart by type.

    An input that can be both ``1`` and ``True`` (say) has one direction (or one number)
    for both in a compiled model, so a Map, SequenceMap or Select predicate that gives
    different results for them cannot be compiled exactly. Results are compared as the
    model holds them (`_outcome_classes`), from the lookup arrays: rows (or columns) of
    the twins must be equal.
    """
    if isinstance(node, Map):
        operands: list[tuple[SOp, int]] = [(node.inner, 0)]
    elif isinstance(node, (SequenceMap, LinearSequenceMap)) and node.fst is node.snd:
        operands = [(node.fst, 0)]  # one SOp twice: only f(v, v) occurs, a Map of v
    elif isinstance(node, (SequenceMap, LinearSequenceMap)):
        operands = [(node.fst, 0), (node.snd, 1)]
    elif isinstance(node, Select):
        operands = [(node.keys, 0), (node.queries, 1)]
    else:
        return None
    groups = [(child, axis, group) for child, axis in operands
              for group in analysis.type_collisions.get(child, ())]
    if not groups:
        return None
    classes = _outcome_classes(analysis, node)
    if isinstance(node, (SequenceMap, LinearSequenceMap)) and node.fst is node.snd:
        classes = np.diagonal(classes)
    for child, axis, group in groups:
        table = analysis.tables[child]
        lines = np.take(classes, [table.code(v) for v in group], axis=axis)
        if not (lines == np.take(lines, [0], axis=axis)).all():
            twins = " or ".join(map(repr, group))
            return (f"its input {analysis.labels[child]!r} can be {twins} (equal values "
                    "told apart by type or sign, one value in a compiled model) and its "
                    "function gives different results for them")
    return None


# ------------------------------------------------------------- identity equality


def identity_entries(node: RASPExpr, first: Sequence[Value], second: Sequence[Value]
                     ) -> np.ndarray | None:
    """``[len(first), len(second)]`` bool: the entries of ``node``'s lookup array where
    `evaluate`'s answer may depend on object identity, or None when none can.

    ``first`` and ``second`` are the values of a Select's keys and queries, or of a
    SequenceMap's two inputs. `evaluate` makes one object per position where the tables
    hold one per value (`identity_dependent`), so a predicate comparing a key with a
    query of another position may see two objects where a table sees one: every entry
    whose key or query is identity-dependent (not for TRUE and FALSE, which compare
    nothing). A SequenceMap of two different SOps sees, at one position, two objects that
    may come from different positions (an Aggregate moves values): the entries where
    both are. A Map sees one object at a time, and a categorical Aggregate's "all the
    same" is left to `evaluate` (`rasplang.interpreter.tables.NumericInfo`).
    """
    if isinstance(node, Select):
        if node.predicate in (Comparison.TRUE, Comparison.FALSE):
            return None
        both = False
    elif isinstance(node, (SequenceMap, LinearSequenceMap)) and node.fst is not node.snd:
        both = True
    else:
        return None
    rows = _identity_mask(first)
    cols = _identity_mask(second)
    if not (rows.any() and cols.any()) if both else not (rows.any() or cols.any()):
        return None
    return np.logical_and.outer(rows, cols) if both else np.logical_or.outer(rows, cols)


def identity_problem(node: RASPExpr, values_of: Callable[[SOp], Sequence[Value]],
                     labels: dict[RASPExpr, str]) -> str | None:
    """Why ``node``'s answer may depend on object identity (`identity_entries`), naming
    a value and the input it comes from; None when it cannot. ``values_of(sop)`` gives
    an input's values (the analysis's table, or an interpreter run's grown one)."""
    if isinstance(node, Select):
        sides = (("keys", node.keys), ("queries", node.queries))
    elif isinstance(node, (SequenceMap, LinearSequenceMap)):
        sides = (("first input", node.fst), ("second input", node.snd))
    else:
        return None
    values = [values_of(sop) for _, sop in sides]
    if identity_entries(node, *values) is None:
        return None
    found = [(role, sop, next((v for v in vals if identity_dependent(v)), _NONE))
             for (role, sop), vals in zip(sides, values)]
    found = [(role, sop, v) for role, sop, v in found if v is not _NONE]
    if isinstance(node, Select):
        role, sop, value = found[0]
        what = f"compares {short(value)} (a value of its {role} {labels[sop]!r})"
        where = "which keys each query selects"
    else:
        (_, a, x), (_, b, y) = found
        what = (f"receives {short(x)} from {labels[a]!r} next to {short(y)} from "
                f"{labels[b]!r}")
        where = "its result"
        value = x
    return (f"{what}, whose equality depends on object identity ({_why(value)}): "
            f"evaluate makes one object per position, so {where} depends on which object "
            "each position holds, which no table or model can follow; use values compared "
            "by value (a class with __eq__ and __hash__, no NaN inside a tuple)")


_NONE = object()


def _identity_mask(values: Sequence[Value]) -> np.ndarray:
    """``[len(values)]`` bool: which values are `identity_dependent`."""
    return np.fromiter((identity_dependent(v) for v in values), dtype=bool, count=len(values))


def _why(value: Value) -> str:
    """Why ``value``'s equality depends on object identity, in a few words."""
    if isinstance(value, (tuple, frozenset)):
        return (f"a NaN inside a {type(value).__name__} equals only the same NaN object"
                if _holds_nan(value) else
                f"it holds {next(short(v) for v in value if identity_dependent(v))}")
    if type(value).__eq__ is object.__eq__:
        return f"{type(value).__name__} keeps object's default ==, which is identity"
    return "it is not equal to itself"


def _holds_nan(value: Value) -> bool:
    """Whether a tuple or frozenset holds a float NaN, at any depth."""
    return any(v != v if isinstance(v, float) else
               isinstance(v, (tuple, frozenset)) and _holds_nan(v) for v in value)
