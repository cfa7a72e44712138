"""Selectors as sums of [query value, key value] tables.

A `Select(keys, queries, p)` on categorical SOps is the 0/1 table
``T[a, b] = p(b, a)`` over query values ``a`` and key values ``b``. Boolean
combinations of selectors that share the same keys and queries SOps are combined
table-wise (and, or, not). A `SelectorAnd` of parts with different SOps is kept as a
list of terms: with ``m`` terms the logit ``sum_t T_t`` equals ``m`` exactly when every
term selects, and is at most ``m - 1`` otherwise, which is all the attention head needs
(see ``attention.py``). Anything else (an `or`/`not` across different SOps, numerical
keys or queries) is refused with a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import numpy as np
from rasplang.backend.spaces import SOpSpace

from rasplang.nodes import (
    RASPExpr,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SOp,
)


class SelectorUnsupported(Exception):
    """A selector that no attention head computes exactly; the message says why."""


@attrs.frozen(eq=False)
class Term:
    """One table ``table[query value index, key value index]`` in {0, 1}."""

    keys: SOp
    queries: SOp
    table: np.ndarray


def predicate_table(node: Select, keys: SOpSpace, queries: SOpSpace) -> np.ndarray:
    """``T[a, b] = predicate(key b, query a)`` over the categorical values."""
    table = np.zeros((len(queries.values), len(keys.values)))
    for i, q in enumerate(queries.values):
        for j, k in enumerate(keys.values):
            try:
                table[i, j] = bool(node.predicate(k, q))
            except Exception:  # the evaluator raises on such inputs: any value will do
                table[i, j] = 0.0
    return table


def selector_terms(selector: Selector, is_numerical: Callable[[SOp], bool],
                   labels: Mapping[RASPExpr, str],
                   table: Callable[[Select], np.ndarray]) -> list[Term]:
    """The terms of ``selector``; raises SelectorUnsupported naming the reason.

    ``table(select)`` gives each Select's 0/1 table (the validation pass passes a dummy).
    """
    if isinstance(selector, Select):
        for role, sop in (("keys", selector.keys), ("queries", selector.queries)):
            if is_numerical(sop):
                raise SelectorUnsupported(
                    f"Select {labels[selector]!r} has numerical {role} {labels[sop]!r}; "
                    "attention compares categorical keys and queries only")
        return [Term(selector.keys, selector.queries, table(selector))]
    if isinstance(selector, SelectorNot):
        inner = selector_terms(selector.inner, is_numerical, labels, table)
        if len(inner) != 1:
            raise SelectorUnsupported(
                f"SelectorNot {labels[selector]!r} negates an `and` of selectors on "
                "different SOps, which one attention head cannot compute exactly")
        return [attrs.evolve(inner[0], table=1.0 - inner[0].table)]
    if isinstance(selector, (SelectorAnd, SelectorOr)):
        fst = selector_terms(selector.fst, is_numerical, labels, table)
        snd = selector_terms(selector.snd, is_numerical, labels, table)
        if isinstance(selector, SelectorAnd):
            return _merge(fst + snd)
        if (len(fst) == 1 and len(snd) == 1 and fst[0].keys is snd[0].keys
                and fst[0].queries is snd[0].queries):
            return [attrs.evolve(fst[0], table=np.maximum(fst[0].table, snd[0].table))]
        raise SelectorUnsupported(
            f"SelectorOr {labels[selector]!r} combines selectors on different SOps, which "
            "one attention head cannot compute exactly (only `and` adds up)")
    raise SelectorUnsupported(
        f"{type(selector).__name__} {labels[selector]!r} cannot be compiled")


def _merge(terms: list[Term]) -> list[Term]:
    """Combine terms on the same (keys, queries) SOps by elementwise `and`."""
    out: list[Term] = []
    for term in terms:
        for i, seen in enumerate(out):
            if seen.keys is term.keys and seen.queries is term.queries:
                out[i] = attrs.evolve(seen, table=seen.table * term.table)
                break
        else:
            out.append(term)
    return out
