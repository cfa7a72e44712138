"""tracr-compatible names: ``from rasplang import rasp`` for ``from tracr.rasp import rasp``.

A tracr program runs after changing only its import lines. Differences from tracr:
``numerical``, ``categorical``, ``annotate`` and ``named`` return a new node instead of
changing the node in place (always use the returned node, as tracr's own library does).
"""

from __future__ import annotations

from typing import Any

from rasplang.evaluator import evaluate
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
    Predicate,
    RASPExpr,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
    Value,
    categorical,
    get_encoding,
    indices,
    is_categorical,
    is_numerical,
    length,
    numerical,
    tokens,
)

__all__ = [
    "Aggregate", "Comparison", "ConstantSOp", "ConstantSelector", "Encoding", "Full",
    "IndicesType", "LengthType", "LinearSequenceMap", "Map", "Predicate", "RASPExpr", "SOp",
    "Select", "Selector", "SelectorAnd", "SelectorNot", "SelectorOr", "SelectorWidth",
    "SequenceMap", "TokensType", "Value", "annotate", "categorical", "evaluate",
    "get_encoding", "indices", "is_categorical", "is_numerical", "length", "numerical",
    "selector_and", "selector_not", "selector_or", "tokens",
]


def annotate(expr: RASPExpr, **annotations: Any) -> RASPExpr:
    """tracr's ``annotate``: returns ``expr.annotated(**annotations)``."""
    return expr.annotated(**annotations)


def selector_and(fst: Selector, snd: Selector) -> Selector:
    """``fst & snd``."""
    return SelectorAnd(fst, snd)


def selector_or(fst: Selector, snd: Selector) -> Selector:
    """``fst | snd``."""
    return SelectorOr(fst, snd)


def selector_not(inner: Selector) -> Selector:
    """``~inner``."""
    return SelectorNot(inner)
