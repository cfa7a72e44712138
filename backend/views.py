"""Nodes as tables over the residual stream: `View`, and the analysis's tables as
functions.

A `View` is an SOp as a function of *bases*, the SOps (or a SelectorWidth's scratch
coordinate) a block reads from the residual stream: its value at every combination of
the bases' values, read from the analysis's tables (no program function is called
again). Fusion (``fusion.py``) composes views of the nodes it computes inside their
readers; a cell no input reaches (a length not above the position's index) is marked
`fused_mlp.IMPOSSIBLE` by `mark_impossible`.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from rasplang.analysis import RAISED, Analysis
from rasplang.backend.chambers import attention, fused_mlp
from rasplang.backend.derived import Scratch
from rasplang.nodes import (
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    Select,
    SelectorWidth,
    SequenceMap,
    SOp,
)
from rasplang.operators import Comparison


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


def map_table(analysis: Analysis, node: Map) -> dict[Any, Any]:
    """A Map's output at each value of its input (`Analysis.map_outputs`; None where the
    function raised, as `evaluate` raises there too, so any value will do)."""
    return dict(zip(analysis.value_sets[node.inner], map(_value, analysis.map_outputs(node))))


def pair_table(analysis: Analysis, node: SequenceMap | LinearSequenceMap) -> Any:
    """A SequenceMap's output at each pair of input values, as a function
    (`Analysis.sequence_map_outputs`); the program's function is never called again."""
    grid = analysis.sequence_map_outputs(node)
    rows = {v: i for i, v in enumerate(analysis.value_sets[node.fst])}
    cols = {v: j for j, v in enumerate(analysis.value_sets[node.snd])}
    return lambda a, b: _value(grid[rows[a], cols[b]])


def integer(v: Any) -> int | None:
    """``v`` as an int when it is an integral number (bools included), else None."""
    if isinstance(v, (bool, int)):
        return int(v)
    return int(v) if isinstance(v, float) and v.is_integer() else None


def counts_every_key(sop: SOp) -> bool:
    """Whether ``sop`` is the length (a count of every key): at least ``i + 1`` at the
    position of index ``i``, causal or not."""
    return isinstance(sop, LengthType) or (
        isinstance(sop, SelectorWidth) and isinstance(sop.selector, Select)
        and sop.selector.predicate is Comparison.TRUE)


def base_values(view: View, axis: int) -> np.ndarray:
    """The numbers base ``axis`` holds (a length's scratch coordinate read as the count)."""
    if isinstance(view.bases[axis], Scratch):
        return np.array([attention.scratch_width(x) for x in view.values[axis]], dtype=float)
    return np.asarray(view.values[axis], dtype=float)


def mark_impossible(view: View) -> np.ndarray:
    """``view.grid`` with IMPOSSIBLE where a length base is not above an indices base."""
    lengths = [a for a, b in enumerate(view.bases)
               if counts_every_key(b.inner if isinstance(b, Scratch) else b)]
    positions = [a for a, b in enumerate(view.bases) if isinstance(b, IndicesType)]
    if not lengths or not positions:
        return view.grid
    grid = view.grid.copy()
    for a in lengths:
        widths = base_values(view, a)
        for p in positions:
            shape = [1] * grid.ndim
            shape[a], shape[p] = len(widths), len(view.values[p])
            below = np.less_equal.outer(widths, base_values(view, p))
            below = below if a < p else below.T
            grid[np.broadcast_to(below.reshape(shape), grid.shape)] = fused_mlp.IMPOSSIBLE
    return grid
