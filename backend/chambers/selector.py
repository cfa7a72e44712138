"""Selectors as sums of [query value, key value] tables, products for `or` and `not`.

A `Select(keys, queries, p)` on categorical SOps is the 0/1 table
``T[a, b] = p(b, a)`` over query values ``a`` and key values ``b`` (a numerical keys or
queries SOp is first re-encoded one-hot by an `AsCategorical` conversion, so a Select
always reads categorical SOps). Boolean combinations are combined table-wise:

- ``&`` of selectors on the same (keys, queries) SOps multiplies their tables; ``&`` of
  selectors on different SOps is kept as a list of terms: with ``m`` terms the logit
  ``sum_t T_t`` equals ``m`` exactly when every term selects and is at most ``m - 1``
  otherwise, which is all the attention head needs (see ``attention.py``);
- ``|`` and ``~`` of selectors on different SOps cannot be a sum of terms (``T1 + T2``
  is 1 or 2 on selected keys, so they would not share one logit). They are computed on
  the *product* of the SOps involved: the keys become the tuple of every key SOp of the
  sub-selector (a `Product` SOp, one-hot over the cartesian product of their values,
  built by one MLP) and the queries likewise; the combined predicate is then one 0/1
  table over (query tuple, key tuple), evaluated exactly from the leaves' tables. A side
  with a single SOp needs no product.

Each intermediate result is a `Pred`: the query parts, the key parts and a 0/1 array of
shape ``(*query sizes, *key sizes)``; lifting a Pred to more parts is numpy broadcasting.
Products are bounded (`MAX_PRODUCT_VALUES` per side, `MAX_TABLE_ENTRIES` per table);
past them the selector is refused with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import attrs
import numpy as np

from rasplang.nodes import (
    RASPExpr,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SOp,
)

#: Largest number of value tuples one side of a product selector may have (each is a
#: residual direction and an MLP unit).
MAX_PRODUCT_VALUES = 4096
#: Largest combined (query tuple x key tuple) table a selector may need (sort_by_most_freq
#: at max_seq_len 40 needs 3,240 x 3,240; its head factors into constant blocks, see
#: `BilinearMap.factor`).
MAX_TABLE_ENTRIES = 2**24
#: Largest (query values x key values) table of one Select: its predicate is called on
#: every pair, and the head's query-key matrix holds the table (indices x indices at
#: length 8,192).
MAX_SELECT_ENTRIES = 2**26


class SelectorUnsupported(Exception):
    """A selector that no attention head computes exactly; the message says why."""


@attrs.frozen(eq=False)
class Term:
    """One table ``table[query value index, key value index]`` in {0, 1}."""

    keys: SOp
    queries: SOp
    table: np.ndarray


class SelectorContext(Protocol):
    """What `selector_terms` needs from its caller (the build or the validation pass)."""

    def resolve(self, sop: SOp) -> SOp:
        """The categorical SOp a Select reads for ``sop`` (itself, or its conversion)."""

    def size(self, sop: SOp) -> int:
        """The number of categorical values of a resolved SOp."""

    def table(self, select: Select, keys: SOp, queries: SOp) -> np.ndarray:
        """``select``'s 0/1 table over the resolved ``queries`` x ``keys`` values."""

    def product(self, parts: tuple[SOp, ...]) -> SOp:
        """The `Product` SOp of two or more resolved SOps (values in C order)."""

    def label(self, node: RASPExpr) -> str:
        """The node's label, for messages."""

    def unbuilt(self, sop: SOp) -> bool:
        """Whether a resolved SOp has no residual directions of its own (the compiler
        computes it inside a `Product`, even of one part)."""


@attrs.frozen(eq=False)
class Pred:
    """A 0/1 predicate over query parts x key parts; ``table`` has one axis per part."""

    queries: tuple[SOp, ...]
    keys: tuple[SOp, ...]
    table: np.ndarray


def selector_terms(selector: Selector, ctx: SelectorContext) -> list[Term]:
    """The terms whose logits add up to ``selector``; SelectorUnsupported says why not."""
    terms = []
    for pred in _conjunction(selector, ctx):
        queries, keys = (parts[0] if len(parts) == 1 and not ctx.unbuilt(parts[0])
                         else ctx.product(parts) for parts in (pred.queries, pred.keys))
        n_q = math.prod(pred.table.shape[: len(pred.queries)])
        n_k = math.prod(pred.table.shape[len(pred.queries):])
        terms.append(Term(keys, queries, pred.table.reshape(n_q, n_k)))
    return terms


def _conjunction(selector: Selector, ctx: SelectorContext) -> list[Pred]:
    """``selector`` as an `and` of Preds, one per distinct (queries, keys) parts."""
    if isinstance(selector, Select):
        keys, queries = ctx.resolve(selector.keys), ctx.resolve(selector.queries)
        n_q, n_k = ctx.size(queries), ctx.size(keys)
        if n_q * n_k > MAX_SELECT_ENTRIES:
            raise SelectorUnsupported(
                f"Select {ctx.label(selector)!r}: its table over {n_q:,} query values x "
                f"{n_k:,} key values would have {n_q * n_k:,} entries (limit "
                f"MAX_SELECT_ENTRIES={MAX_SELECT_ENTRIES:,})")
        table = np.asarray(ctx.table(selector, keys, queries), dtype=bool)
        return [Pred((queries,), (keys,), table)]
    if isinstance(selector, SelectorAnd):
        return _merge(_conjunction(selector.fst, ctx) + _conjunction(selector.snd, ctx))
    if isinstance(selector, SelectorOr):
        fst = _fuse(_conjunction(selector.fst, ctx), selector, ctx)
        snd = _fuse(_conjunction(selector.snd, ctx), selector, ctx)
        queries, keys = _union(fst.queries, snd.queries), _union(fst.keys, snd.keys)
        _check_size(selector, queries, keys, ctx)
        table = _lift(fst, queries, keys, ctx) | _lift(snd, queries, keys, ctx)
        return [Pred(queries, keys, table)]
    if isinstance(selector, SelectorNot):
        inner = _fuse(_conjunction(selector.inner, ctx), selector, ctx)
        return [attrs.evolve(inner, table=~inner.table)]
    raise SelectorUnsupported(
        f"{type(selector).__name__} {ctx.label(selector)!r} cannot be compiled")


def _merge(preds: list[Pred]) -> list[Pred]:
    """Combine Preds on the same (queries, keys) parts by elementwise `and`."""
    out: list[Pred] = []
    for pred in preds:
        for i, seen in enumerate(out):
            if _same(seen.queries, pred.queries) and _same(seen.keys, pred.keys):
                out[i] = attrs.evolve(seen, table=seen.table & pred.table)
                break
        else:
            out.append(pred)
    return out


def _fuse(preds: list[Pred], where: Selector, ctx: SelectorContext) -> Pred:
    """One Pred over the union of the parts: the `and` of ``preds``."""
    if len(preds) == 1:
        return preds[0]
    queries = _union(*(p.queries for p in preds))
    keys = _union(*(p.keys for p in preds))
    _check_size(where, queries, keys, ctx)
    table = _lift(preds[0], queries, keys, ctx)
    for pred in preds[1:]:
        table = table & _lift(pred, queries, keys, ctx)
    return Pred(queries, keys, table)


def _check_size(where: Selector, queries: tuple[SOp, ...], keys: tuple[SOp, ...],
                ctx: SelectorContext) -> None:
    n_q = math.prod(ctx.size(s) for s in queries)
    n_k = math.prod(ctx.size(s) for s in keys)
    for side, parts, n in (("queries", queries, n_q), ("keys", keys, n_k)):
        if len(parts) > 1 and n > MAX_PRODUCT_VALUES:
            names = ", ".join(ctx.label(p) for p in parts)
            raise SelectorUnsupported(
                f"{type(where).__name__} {ctx.label(where)!r} combines selectors on different "
                f"SOps; its {side} would be the tuple ({names}) with {n} values "
                f"(limit {MAX_PRODUCT_VALUES})")
    if n_q * n_k > MAX_TABLE_ENTRIES:
        raise SelectorUnsupported(
            f"{type(where).__name__} {ctx.label(where)!r}: its combined predicate table "
            f"would have {n_q} x {n_k} entries (limit {MAX_TABLE_ENTRIES})")


def _same(a: tuple[SOp, ...], b: tuple[SOp, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _union(*groups: tuple[SOp, ...]) -> tuple[SOp, ...]:
    """The SOps of ``groups`` in first-appearance order, each once (by identity)."""
    seen: dict[int, SOp] = {}
    for group in groups:
        for sop in group:
            seen.setdefault(id(sop), sop)
    return tuple(seen.values())


def _lift(pred: Pred, queries: tuple[SOp, ...], keys: tuple[SOp, ...],
          ctx: SelectorContext) -> np.ndarray:
    """``pred.table`` broadcast to axes ``(*queries, *keys)`` (parts it lacks: any value)."""
    position: Callable[[tuple[SOp, ...], SOp], int] = lambda parts, sop: next(
        i for i, p in enumerate(parts) if p is sop)
    axes = [position(queries, s) for s in pred.queries]
    axes += [len(queries) + position(keys, s) for s in pred.keys]
    order = np.argsort(axes)
    table = pred.table.transpose(order)
    shape = [1] * (len(queries) + len(keys))
    for axis in axes:
        part = queries[axis] if axis < len(queries) else keys[axis - len(queries)]
        shape[axis] = ctx.size(part)
    full = [ctx.size(s) for s in (*queries, *keys)]
    return np.broadcast_to(table.reshape(shape), full)
