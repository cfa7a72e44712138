"""Lookup-table MLPs on categorical (one-hot) inputs.

Map, categorical input. At a real position the input is the one-hot ``e_x`` of its
value ``x`` (None is the zero vector). For every output value ``y`` one hidden unit
reads the indicator of the preimage, ``h_y = relu(sum_{x: f(x)=y} e_x)``, which is
exactly ``[f(x) = y]`` because the preimages are disjoint; the unit writes the
encoding of ``y`` (its one-hot, or the number ``y`` for a numerical output). So the
output is exactly ``enc(f(x))``, and for ``x = None`` (the zero vector) no unit fires;
when the output is numerical and nullable, ``none_flags.none_units`` add the unit that
writes its None flag there (``f(x) = None`` for a value ``x`` is written by the
value's own unit: ``enc(None)`` is the flag). Hidden units:
the number of distinct outputs (tracr uses one per input value). Error: an input
off by ``e`` per coordinate gives an output off by at most ``|X| e``.

SequenceMap, categorical inputs. Three exact layouts; the compiler takes the one with
the fewest units: one unit per pair ``(a, b)``, ``relu(e_a + e_b - 1) = [x=a][y=b]``;
or one unit per ``(a, z)``, ``relu(e_a + sum_{b: f(a,b)=z} e_b - 1) = [x=a][f(x,y)=z]``
(the sum over a preimage is 0 or 1); or the mirror ``(b, z)``. Each unit is 1 exactly
when its condition holds and 0 otherwise, and for each input pair exactly one unit of
each group fires, so the output is ``enc(f(x, y))``. When both inputs are the same SOp
the SequenceMap is the Map ``v -> f(v, v)``.

Product (the keys or queries of an ``|``/``~`` selector on several SOps, see
``selector.py``). For ``k`` categorical inputs and every tuple ``(v_1, ..., v_k)`` of
their values one unit ``relu(e_{v_1} + ... + e_{v_k} - (k - 1))``: the sum of ``k``
indicators, each 0 or 1, minus ``k - 1`` is 1 exactly when all hold and at most 0
otherwise, so the unit is the tuple's indicator and writes the tuple's one-hot. A None
input (the zero vector) fires no unit: the product is None, as a Select on a None key
or query is an error in `evaluate`. Error: inputs off by ``e`` per coordinate give an
output off by at most ``sum_i |V_i| e_i``. Units: the number of tuples.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from rasplang.backend.chambers.gated_mlp import gated_mlp
from rasplang.backend.chambers.none_flags import with_none_units
from rasplang.backend.craft.blocks import MLP
from rasplang.backend.spaces import ONE, BosState, SOpSpace
from rasplang.values import typed_key


def _out_columns(out: SOpSpace, values: list[Any]) -> np.ndarray:
    """[len(values), out_dim]: the encoding of each output value."""
    return np.stack([out.encode(v) for v in values]) if values else np.zeros((0, len(
        out.directions)))


def map_categorical_mlp(
    label: str, inp: SOpSpace, out: SOpSpace, f: Callable[[Any], Any],
    bos: BosState,
) -> MLP:
    """Map on a categorical input, to a categorical or numerical output."""
    groups: dict[int, list[int]] = defaultdict(list)
    outputs: list[Any] = []
    seen: dict[tuple[type, Any], int] = {}
    for i, x in enumerate(inp.values):
        y = f(x)
        if not out.encode(y).any():
            continue
        key = seen.setdefault((type(y), y), len(outputs))
        if key == len(outputs):
            outputs.append(y)
        groups[key].append(i)
    w_in = np.zeros((len(inp.directions), len(outputs)))
    for unit, rows in groups.items():
        w_in[rows, unit] = 1.0
    in_dirs, w_in, w_out = with_none_units(list(inp.directions), w_in,
                                           _out_columns(out, outputs), [inp], out)
    return gated_mlp(label, in_dirs, w_in, out.directions, w_out, bos)


@attrs.frozen
class TableLayout:
    """The units of a SequenceMap's lookup table: ``(anchor, rows, output)`` each, in the
    layout with the fewest (``name``: "pairs", "by_fst" or "by_snd")."""

    name: str
    units: list[tuple[int, tuple[int, ...], Any]]


def table_layout(fst: SOpSpace, snd: SOpSpace, out: SOpSpace,
                 f: Callable[[Any, Any], Any]) -> TableLayout:
    """The smallest of the three exact layouts for ``f`` on two categorical inputs."""
    table = {}
    for i, a in enumerate(fst.values):
        for j, b in enumerate(snd.values):
            y = f(a, b)
            if not out.encode(y).any():
                continue
            table[i, j] = y

    def grouped(by_first: bool) -> list[tuple[int, tuple[int, ...], Any]]:
        units: dict[tuple[int, Any], list[int]] = defaultdict(list)
        for (i, j), y in table.items():
            key = (i if by_first else j, typed_key(y))
            units[key].append(j if by_first else i)
        return [(k[0], tuple(rows), table[(k[0], rows[0]) if by_first else (rows[0], k[0])])
                for k, rows in units.items()]

    layouts = {
        "pairs": [(i, (j,), y) for (i, j), y in table.items()],
        "by_fst": grouped(True),
        "by_snd": grouped(False),
    }
    name = min(layouts, key=lambda k: len(layouts[k]))
    return TableLayout(name, layouts[name])


def sequence_map_categorical_mlp(
    label: str, fst: SOpSpace, snd: SOpSpace, out: SOpSpace, layout: TableLayout,
    bos: BosState,
) -> MLP:
    """SequenceMap on two categorical inputs (different SOps), as `table_layout` laid it
    out."""
    name, units = layout.name, layout.units
    n_fst, n_snd = len(fst.directions), len(snd.directions)
    in_dirs = (*fst.directions, *snd.directions, ONE)
    w_in = np.zeros((n_fst + n_snd + 1, len(units)))
    for u, (anchor, rows, _) in enumerate(units):
        if name == "by_snd":
            w_in[n_fst + anchor, u] = 1.0
            w_in[list(rows), u] = 1.0
        else:
            w_in[anchor, u] = 1.0
            w_in[[n_fst + r for r in rows], u] = 1.0
        w_in[-1, u] = -1.0
    dirs, w_in, w_out = with_none_units(list(in_dirs), w_in,
                                        _out_columns(out, [y for _, _, y in units]),
                                        [fst, snd], out)
    return gated_mlp(label, dirs, w_in, out.directions, w_out, bos)


def product_mlp(
    label: str, parts: list[SOpSpace], out: SOpSpace,
    bos: BosState,
) -> MLP:
    """The tuple of ``parts`` (categorical) as a one-hot over ``out.values``, which are
    the cartesian product of the parts' values in C order."""
    sizes = [len(p.values) for p in parts]
    n_units = len(out.values)
    grids = np.unravel_index(np.arange(n_units), sizes) if n_units else [[]] * len(parts)
    in_dirs = [d for p in parts for d in p.directions] + [ONE]
    w_in = np.zeros((len(in_dirs), n_units))
    offset = 0
    for size, grid in zip(sizes, grids):
        w_in[offset + np.asarray(grid, dtype=np.intp), np.arange(n_units)] = 1.0
        offset += size
    w_in[-1] = -(len(parts) - 1.0)
    return gated_mlp(label, in_dirs, w_in, out.directions, np.eye(n_units), bos)
