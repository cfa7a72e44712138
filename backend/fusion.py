"""Fusion and folding (``optimize=True``): nodes computed inside the blocks that read them.

A *virtual* node gets no residual directions and no block of its own. Each reader
computes it, composed with its own function, from the node's *bases*: the nearest SOps
(or a SelectorWidth's scratch coordinate, `Scratch`) that are in the residual stream.
Every value set is finite and known (`rasplang.analysis`), so the composition is a
table, a `View`: the node's value at every combination of its bases' values, read
from the analysis's tables (no program function is called again).

What may be virtual (`choose_virtual`), and which readers absorb it:

- a Map or a (non-linear) SequenceMap of any nodes, and a SelectorWidth's count (its
  decoding MLP; the head and its scratch coordinate stay);
- read by Maps and table SequenceMaps, which become one MLP over the union of the
  bases (a lookup table over categorical bases, or a discretisation of the one
  numerical base gated by the categorical ones, ``chambers/fused_mlp.py``);
- read as the keys or queries of a Select when it has one categorical base: the head's
  query-key table is the predicate composed with the node's function;
- read as the value of an Aggregate when it has one categorical base: the head's OV
  matrix writes the encoding of the node's value directly.

Cost model. Folding removes the node's residual directions and its MLP, and takes
an MLP sublayer (a whole layer when it was between two MLPs) off every path through
it; it never adds a layer. Its price is table size: a reader's fused table has one
entry per combination of its bases' values (times the steps of a numerical base), and
a node stays in the residual stream when any reader's table would pass
`FUSED_TABLE_BUDGET` entries, or grow more than `FUSED_GROWTH` times over the reader's
unfused table. Every decision is made before any weight is built, in topological
order, so each reader's table is checked with its inputs' final bases.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import attrs
import numpy as np

from rasplang.analysis import RAISED, Analysis
from rasplang.nodes import (
    Aggregate,
    Encoding,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    SelectorWidth,
    SequenceMap,
    SOp,
)

#: Largest table (combinations of base values, times a numerical base's values) a reader
#: of a virtual node may have: its MLP has up to that many hidden units (twice per
#: step of a numerical base).
FUSED_TABLE_BUDGET = 4096
#: Largest factor by which folding may grow a reader's table over its unfused one.
FUSED_GROWTH = 8


@attrs.define(frozen=True, eq=False, repr=False)
class Scratch(SOp):
    """A SelectorWidth's scratch coordinate ``1 / (width + 1)``, as a numerical SOp."""

    width: SOp

    __hash__ = object.__hash__
    _default_name = "scratch"

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.width,)


@attrs.frozen(eq=False)
class View:
    """An SOp as a function of residual-stream bases: ``grid[i_1, ..., i_k]`` is its value
    where base ``j`` holds its ``i_j``-th value (``values[j]``)."""

    bases: tuple[SOp, ...]
    values: tuple[tuple[Any, ...], ...]
    grid: np.ndarray
    #: The virtual nodes composed into it, in the order they were defined.
    fused: tuple[SOp, ...] = ()

    def compose(self, f: Any) -> View:
        """``f`` of this view's values (``f(None)`` is never asked: None stays None)."""
        out = np.empty(self.grid.shape, dtype=object)
        flat, res = self.grid.reshape(-1), out.reshape(-1)
        for i, v in enumerate(flat.tolist()):
            res[i] = None if v is None else _value(f(v))
        return View(self.bases, self.values, out, self.fused)

    def lift(self, bases: tuple[SOp, ...], values: tuple[tuple[Any, ...], ...]) -> np.ndarray:
        """``grid`` broadcast to axes ``bases`` (a superset of this view's bases)."""
        axes = [next(i for i, b in enumerate(bases) if b is mine) for mine in self.bases]
        order = np.argsort(axes)
        shape = [1] * len(bases)
        for axis in axes:
            shape[axis] = len(values[axis])
        grid = self.grid.transpose(order).reshape(shape)
        return np.broadcast_to(grid, [len(v) for v in values])


def pair(fst: View, snd: View, f: Any) -> View:
    """The view of ``f(x, y)`` for x read by ``fst`` and y by ``snd`` (None if either is)."""
    bases = tuple({id(b): b for b in (*fst.bases, *snd.bases)}.values())
    lookup = {id(b): v for view in (fst, snd) for b, v in zip(view.bases, view.values)}
    values = tuple(lookup[id(b)] for b in bases)
    xs, ys = fst.lift(bases, values), snd.lift(bases, values)
    out = np.empty(xs.shape, dtype=object)
    for idx in np.ndindex(*xs.shape):
        x, y = xs[idx], ys[idx]
        out[idx] = None if x is None or y is None else _value(f(x, y))
    return View(bases, values, out, tuple(dict.fromkeys((*fst.fused, *snd.fused))))


def identity(base: SOp, values: tuple[Any, ...]) -> View:
    """A base read as itself."""
    grid = np.empty(len(values), dtype=object)
    grid[:] = list(values)
    return View((base,), (values,), grid)


def _value(y: Any) -> Any:
    return None if y is RAISED else y


# ------------------------------------------------------------------ the decisions


@attrs.frozen
class _Base:
    """What `choose_virtual` knows of a base: its size and kind."""

    node: SOp
    size: int
    numerical: bool
    nullable: bool


def _readers(analysis: Analysis) -> dict[SOp, list[tuple[RASPExpr, str]]]:
    """Each SOp's readers and the role it plays for them."""
    out: dict[SOp, list[tuple[RASPExpr, str]]] = defaultdict(list)
    for node in analysis.nodes:
        if isinstance(node, Map):
            out[node.inner].append((node, "map"))
        elif isinstance(node, (SequenceMap, LinearSequenceMap)):
            for child in dict.fromkeys((node.fst, node.snd)):
                out[child].append((node, "pair"))
        elif isinstance(node, Select):
            for child in dict.fromkeys((node.keys, node.queries)):
                out[child].append((node, "select"))
        elif isinstance(node, Aggregate):
            out[node.sop].append((node, "value"))
    return out


def is_affine_read(analysis: Analysis, node: SOp) -> bool:
    """Whether a SequenceMap is built as a linear read of its inputs (not a table)."""
    return isinstance(node, LinearSequenceMap) and \
        analysis.encodings[node] is Encoding.NUMERICAL


def choose_virtual(analysis: Analysis) -> frozenset[SOp]:
    """The nodes to compute inside their readers (see the module docstring)."""
    readers = _readers(analysis)
    virtual: set[SOp] = set()
    bases: dict[SOp, tuple[_Base, ...]] = {}

    def own(node: SOp) -> tuple[_Base, ...]:
        values = analysis.value_sets[node]
        numerical = analysis.encodings[node] is Encoding.NUMERICAL
        size = sum(v is not None for v in values)
        return (_Base(node, size, numerical, None in values),)

    def union(*groups: tuple[_Base, ...]) -> tuple[_Base, ...]:
        return tuple({id(b.node): b for g in groups for b in g}.values())

    def table_ok(group: tuple[_Base, ...], unfused: int) -> bool:
        numerical = [b for b in group if b.numerical]
        if len(numerical) > 1 or (numerical and any(b.nullable for b in group)):
            return False
        size = math.prod(max(1, b.size) for b in group)
        return size <= FUSED_TABLE_BUDGET and size <= FUSED_GROWTH * max(1, unfused)

    def reader_ok(node: SOp, mine: tuple[_Base, ...], reader: RASPExpr, role: str) -> bool:
        if role == "select":
            return len(mine) == 1 and not mine[0].numerical
        if role == "value":
            if len(mine) != 1 or mine[0].numerical:
                return False
            numbers = analysis.encodings[reader] is Encoding.NUMERICAL
            return not numbers or None not in analysis.value_sets[node]
        if role == "pair" and is_affine_read(analysis, reader):
            return False
        inputs = (reader.inner,) if role == "map" else (reader.fst, reader.snd)
        group = union(*(mine if x is node else bases.get(x) or own(x) for x in inputs))
        unfused = math.prod(own(x)[0].size for x in dict.fromkeys(inputs))
        return table_ok(group, unfused)

    for node in analysis.nodes:
        if not isinstance(node, SOp):
            continue
        if isinstance(node, SelectorWidth):
            mine = (_Base(Scratch(node), analysis.max_seq_len + 1, True, False),)
        elif isinstance(node, Map):
            mine = bases.get(node.inner) or own(node.inner)
        elif isinstance(node, (SequenceMap, LinearSequenceMap)) and \
                not is_affine_read(analysis, node):
            mine = union(*(bases.get(x) or own(x) for x in (node.fst, node.snd)))
        else:
            continue
        users = readers.get(node, [])
        if node is analysis.program or not users:
            continue
        if all(reader_ok(node, mine, r, role) for r, role in users):
            virtual.add(node)
            bases[node] = mine
    return frozenset(virtual)
