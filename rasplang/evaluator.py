"""The reference evaluator: exact RASP semantics on one input (the oracle).

Every other path (the batched interpreter, the compiled model) is tested against this
module. It evaluates the program's nodes in topological order, once each, so shared
nodes are computed once and chains of any depth need no recursion.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from rasplang.graph import topological_order, unique_labels
from rasplang.nodes import (
    Aggregate,
    ConstantSelector,
    ConstantSOp,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    TokensType,
    Value,
)


class EvaluationError(ValueError):
    """Evaluation failed at a node; the message names the node's label."""


def is_number(value: Any) -> bool:
    """Numbers in the sense of Aggregate's mean: int, float, bool (not None, not str)."""
    return isinstance(value, numbers.Real)


def mean(values: Sequence[Value]) -> Value:
    """The exact mean of numbers, rounded once to the nearest float.

    Integers (and bools) use Python's correctly rounded int division; other numbers
    are summed as fractions. The result does not depend on the order of ``values``,
    and the analysis computes the same floats from exact fractions.
    """
    if all(isinstance(v, numbers.Integral) for v in values):
        return sum(int(v) for v in values) / len(values)
    return float(sum((Fraction(v) for v in values), Fraction(0)) / len(values))


def aggregate_row(selected: Sequence[Value], default: Value) -> Value:
    """Aggregate's rule for one query, given the selected values in key order.

    Raises ValueError for several values that are not all numbers and not all equal.
    """
    if not selected:
        return default
    first = selected[0]
    if len(selected) == 1:
        return first
    if all(is_number(v) for v in selected):
        return mean(selected)
    if all(v == first and type(v) is type(first) for v in selected):
        return first
    raise ValueError(f"cannot aggregate several different non-numeric values {list(selected)}")


class _Evaluation:
    """One call of `evaluate`: the input, the causal flag and the memo of results."""

    def __init__(self, xs: Sequence[Value], causal: bool, labels: dict[RASPExpr, str]):
        self.xs = list(xs)
        self.n = len(self.xs)
        self.causal = causal
        self.labels = labels
        self.values: dict[RASPExpr, Any] = {}
        self.mask = np.tril(np.ones((self.n, self.n), dtype=bool)) if causal else None

    def fail(self, node: RASPExpr, message: str) -> EvaluationError:
        return EvaluationError(f"{type(node).__name__} {self.labels[node]!r}: {message}")

    def selector(self, matrix: np.ndarray) -> np.ndarray:
        return matrix & self.mask if self.causal else matrix

    # -- rules: node -> value, reading children's values from self.values

    def tokens(self, node: TokensType) -> list[Value]:
        return list(self.xs)

    def indices(self, node: IndicesType) -> list[Value]:
        return list(range(self.n))

    def length(self, node: LengthType) -> list[Value]:
        return [self.n] * self.n

    def map(self, node: Map) -> list[Value]:
        out = []
        for pos, x in enumerate(self.values[node.inner]):
            if x is None:
                out.append(None)
                continue
            try:
                out.append(node.f(x))
            except Exception as exc:
                raise self.fail(
                    node, f"f raised {type(exc).__name__}: {exc} on value {x!r} at position {pos}"
                ) from exc
        return out

    def sequence_map(self, node: SequenceMap | LinearSequenceMap) -> list[Value]:
        out = []
        for pos, (x, y) in enumerate(zip(self.values[node.fst], self.values[node.snd])):
            if x is None or y is None:
                out.append(None)
                continue
            try:
                out.append(node.f(x, y))
            except Exception as exc:
                raise self.fail(
                    node,
                    f"f raised {type(exc).__name__}: {exc} on values ({x!r}, {y!r}) "
                    f"at position {pos}",
                ) from exc
        return out

    def full(self, node: Full) -> list[Value]:
        return [node.fill] * self.n

    def constant_sop(self, node: ConstantSOp) -> list[Value]:
        if node.check_length and len(node.value) != self.n:
            raise self.fail(
                node, f"constant has length {len(node.value)} but the input has length {self.n}"
            )
        return list(node.value)

    def aggregate(self, node: Aggregate) -> list[Value]:
        matrix = self.values[node.selector]
        values = self.values[node.sop]
        out = []
        for q, row in enumerate(matrix):
            selected = [values[k] for k in np.flatnonzero(row)]
            try:
                out.append(aggregate_row(selected, node.default))
            except (ValueError, ArithmeticError) as exc:  # also a mean with inf or NaN
                raise self.fail(node, f"{exc} at query position {q}") from exc
        return out

    def selector_width(self, node: SelectorWidth) -> list[Value]:
        return [int(w) for w in self.values[node.selector].sum(axis=1)]

    def select(self, node: Select) -> np.ndarray:
        keys, queries = self.values[node.keys], self.values[node.queries]
        for what, vals in (("key", keys), ("query", queries)):
            if any(v is None for v in vals):
                pos = next(i for i, v in enumerate(vals) if v is None)
                raise self.fail(node, f"{what} is None at position {pos}")
        matrix = np.zeros((len(queries), len(keys)), dtype=bool)
        for q, query in enumerate(queries):
            for k, key in enumerate(keys):
                try:
                    matrix[q, k] = bool(node.predicate(key, query))
                except Exception as exc:
                    raise self.fail(
                        node,
                        f"predicate raised {type(exc).__name__}: {exc} on key {key!r} "
                        f"(position {k}) and query {query!r} (position {q})",
                    ) from exc
        return self.selector(matrix)

    def constant_selector(self, node: ConstantSelector) -> np.ndarray:
        matrix = np.array(node.value, dtype=bool).reshape(len(node.value), -1)
        if node.check_length and matrix.shape != (self.n, self.n):
            raise self.fail(
                node, f"constant has shape {matrix.shape} but the input has length {self.n}"
            )
        return self.selector(matrix)

    def selector_and(self, node: SelectorAnd) -> np.ndarray:
        return self.values[node.fst] & self.values[node.snd]

    def selector_or(self, node: SelectorOr) -> np.ndarray:
        return self.values[node.fst] | self.values[node.snd]

    def selector_not(self, node: SelectorNot) -> np.ndarray:
        return self.selector(~self.values[node.inner])


_RULES: dict[type, Callable[[_Evaluation, Any], Any]] = {
    TokensType: _Evaluation.tokens,
    IndicesType: _Evaluation.indices,
    LengthType: _Evaluation.length,
    Map: _Evaluation.map,
    SequenceMap: _Evaluation.sequence_map,
    LinearSequenceMap: _Evaluation.sequence_map,
    Full: _Evaluation.full,
    ConstantSOp: _Evaluation.constant_sop,
    Aggregate: _Evaluation.aggregate,
    SelectorWidth: _Evaluation.selector_width,
    Select: _Evaluation.select,
    ConstantSelector: _Evaluation.constant_selector,
    SelectorAnd: _Evaluation.selector_and,
    SelectorOr: _Evaluation.selector_or,
    SelectorNot: _Evaluation.selector_not,
}


def evaluate_all(
    program: RASPExpr, xs: Sequence[Value], causal: bool = False
) -> dict[RASPExpr, Any]:
    """The value of every node of ``program`` on input ``xs`` (selectors as bool arrays)."""
    nodes = topological_order(program)
    run = _Evaluation(xs, causal, unique_labels(nodes))
    for node in nodes:
        rule = _RULES.get(type(node))
        if rule is None:
            raise NotImplementedError(f"no evaluation rule for {type(node).__name__}")
        run.values[node] = rule(run, node)
    return run.values


def evaluate(program: RASPExpr, xs: Sequence[Value], causal: bool = False) -> Any:
    """Evaluate ``program`` on one input sequence ``xs``.

    Returns a list of values for an SOp, or a list of lists of bools (``[query][key]``)
    for a Selector. With ``causal=True`` every selector is masked to keys at or before
    the query, as in a decoder-only transformer.

    >>> from rasplang import tokens, Map
    >>> evaluate(Map(lambda x: x + 1, tokens), [1, 2, 3])
    [2, 3, 4]
    """
    result = evaluate_all(program, xs, causal)[program]
    if isinstance(program, Selector):
        return result.tolist()
    return result
