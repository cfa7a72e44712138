"""Which categorical Aggregates may select several keys: a proof of single selection.

A categorical Aggregate whose selector may select several keys holding different
values (or ints and bools, whose mean is a float) is *spread*: `evaluate` returns a
mean there, which no one-hot model computes, so `compile` warns. Many selectors select
at most one key per query by construction; this module proves it where it can, so
that such programs (tracr's sort) compile without a warning.

*Distinct* SOps take different values at different positions of every input:

- ``indices``;
- a Map of a distinct SOp whose function is injective on its values;
- a SequenceMap (or LinearSequenceMap) with a distinct input ``y`` whose outputs for
  different values of ``y`` never meet: the sets ``{f(x, y) : x}`` are disjoint for
  different ``y`` (read from the analysis's lookup array, no function is called);
- ``SelectorWidth(Select(k, k, <, >, <= or >=))`` of a distinct ``k`` whose values are
  all numbers or all strings: each position counts the keys below (or above) its own,
  a rank; so does the SelectorWidth of a lexicographic order ``(k < q) | ((k == q) & T)``
  of any such ``k`` and such a total order ``T`` (the RASP paper's stable sort). Not in a
  causal model, where each position ranks only the keys before it.

A Select selects at most one key per query when its keys are distinct and its
predicate is true for at most one key value per query value (``==`` always is; any
predicate is, when its table says so); a SelectorAnd when either side does. None
never counts as distinct (it is one value wherever it is).
"""

from __future__ import annotations

import numbers

import numpy as np

from rasplang.nodes import (
    Aggregate,
    Comparison,
    IndicesType,
    LinearSequenceMap,
    Map,
    Select,
    Selector,
    SelectorAnd,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
)
from rasplang.tables import RAISED_CODE

_RANKS = (Comparison.LT, Comparison.GT, Comparison.LEQ, Comparison.GEQ)


def distinct_sops(analysis, causal: bool) -> set[SOp]:
    """The SOps of ``analysis``'s program that are distinct (module docstring)."""
    distinct: set[SOp] = set()
    for node in analysis.nodes:
        if isinstance(node, IndicesType):
            distinct.add(node)
        elif isinstance(node, Map):
            if node.inner in distinct and _injective(analysis, node):
                distinct.add(node)
        elif isinstance(node, (SequenceMap, LinearSequenceMap)) and node.fst is not node.snd:
            lut = _merged(analysis, node)
            if lut is not None and _no_none(analysis, node) and (
                    (node.snd in distinct and _disjoint(lut))
                    or (node.fst in distinct and _disjoint(lut.T))):
                distinct.add(node)
        elif isinstance(node, SelectorWidth) and not causal and _ranks(analysis, node,
                                                                        distinct):
            distinct.add(node)
    return distinct


def selects_at_most_one(analysis, selector: Selector, distinct: set[SOp]) -> bool:
    """Whether ``selector`` selects at most one key per query on every input."""
    if isinstance(selector, SelectorAnd):
        return (selects_at_most_one(analysis, selector.fst, distinct)
                or selects_at_most_one(analysis, selector.snd, distinct))
    if not isinstance(selector, Select) or selector.keys not in distinct:
        return False
    if selector.predicate is Comparison.EQ:
        return True
    return bool((analysis.predicate(selector).sum(axis=1) <= 1).all())


def spread_aggregates(analysis, causal: bool) -> tuple[Aggregate, ...]:
    """The analysis's ``spread_aggregates`` (categorical Aggregates that might average)
    whose selector is not proven to select at most one key."""
    if not analysis.spread_aggregates:
        return ()
    distinct = distinct_sops(analysis, causal)
    return tuple(node for node in analysis.spread_aggregates
                 if not selects_at_most_one(analysis, node.selector, distinct))


def _injective(analysis, node: Map) -> bool:
    """Different input values give outputs different under ``==`` (none raised, none
    None)."""
    codes = np.asarray(analysis.luts[node])
    if (codes == RAISED_CODE).any() or None in analysis.tables[node].values:
        return False
    merged = analysis.merged_index(node)[codes]
    return len(set(merged.tolist())) == len(merged)


def _merged(analysis, node: SOp) -> np.ndarray | None:
    """The node's lookup array with each output as its value's index under ``==``."""
    lut = analysis.luts.get(node)
    if lut is None:
        return None
    lut = np.asarray(lut)
    index = analysis.merged_index(node)
    if not index.size:  # the node has no value: every entry of its lookup raised
        return lut
    merged = index[np.where(lut == RAISED_CODE, 0, lut)]
    return np.where(lut == RAISED_CODE, RAISED_CODE, merged)


def _no_none(analysis, node: SOp) -> bool:
    """No None among the node's inputs or outputs (None is one value at every position)."""
    return all(None not in analysis.tables[s].values for s in (node.fst, node.snd, node))


def _disjoint(lut: np.ndarray) -> bool:
    """Whether the output codes of different columns never meet (raised entries aside)."""
    seen: set[int] = set()
    for column in np.asarray(lut).T:
        codes = set(column.tolist()) - {RAISED_CODE}
        if seen & codes:
            return False
        seen |= codes
    return True


def _ranks(analysis, node: SelectorWidth, distinct: set[SOp]) -> bool:
    return _total_order(analysis, node.selector, distinct)


def _total_order(analysis, sel: Selector, distinct: set[SOp]) -> bool:
    """Whether ``sel`` orders the positions of every input totally (so each position's
    selector width, the number of positions before it, is its own): a rank comparison
    of a distinct SOp, or the lexicographic ``(k < q) | ((k == q) & T)`` of an SOp ``k``
    and a total order ``T`` (the RASP paper's stable sort)."""
    if isinstance(sel, Select):
        return (sel.keys is sel.queries and sel.keys in distinct
                and sel.predicate in _RANKS and _comparable(analysis, sel.keys))
    if not isinstance(sel, SelectorOr):
        return False
    for strict, tie in ((sel.fst, sel.snd), (sel.snd, sel.fst)):
        if not (isinstance(strict, Select) and strict.keys is strict.queries
                and strict.predicate in (Comparison.LT, Comparison.GT)
                and _comparable(analysis, strict.keys) and isinstance(tie, SelectorAnd)):
            continue
        for equal, then in ((tie.fst, tie.snd), (tie.snd, tie.fst)):
            if (isinstance(equal, Select) and equal.keys is strict.keys
                    and equal.queries is strict.keys and equal.predicate is Comparison.EQ
                    and _total_order(analysis, then, distinct)):
                return True
    return False


def _comparable(analysis, node: SOp) -> bool:
    """The node's values are all numbers (no NaN) or all strings, so ``<`` orders them."""
    values = [v for v in analysis.tables[node].values if v is not None]
    return (all(isinstance(v, numbers.Real) and v == v for v in values)
            or all(isinstance(v, str) for v in values))
