"""MLPs of fused nodes: a table over several categorical inputs, and a discretisation of
one numerical input gated by categorical ones (see ``backend/fusion.py``).

Lookup over ``k`` categorical inputs. The function is a table ``y = T[i_1, ..., i_k]``
over the inputs' values. Pick one axis ``a`` to sum over; for every combination of
the other inputs' values and every output value ``y`` one hidden unit reads
``relu(sum_{j != a} e_{i_j} + sum_{i_a: T[...]=y} e_{i_a} - (k - 1))``. The first sum is
``k - 1`` exactly when every other input holds its value (else at most ``k - 2``),
and the second is the 0/1 indicator of a preimage, so the unit is 1 exactly when the
others match and ``T = y``, and 0 otherwise; for each input combination one unit
fires and writes ``enc(y)``. The axis giving the fewest units is taken (for ``k = 1``
that is one unit per output value, as ``categorical_mlp.map_categorical_mlp``; for
``k = 2`` the smaller of its "by_fst" and "by_snd" layouts). A None input (the zero
vector) fires no unit; ``none_flags.none_units`` write ``enc(None)`` there, which is
what the composed function gives (a Map or SequenceMap of None is None). Error:
inputs off by ``e_j`` per coordinate move a unit by at most ``sum_j |V_j| e_j``.

A cell marked IMPOSSIBLE (a combination of values no input reaches, such as a length
not above the position's index) gets no unit in a lookup, and in a gated discretisation
takes its neighbour's value, so no step is spent on it.

Gated discretisation. A numerical input ``x`` (exact sorted value set) and categorical
inputs ``c_1..c_k``: for every combination ``c`` of their values the units of
``numerical_mlp.discretising_mlp`` for ``x -> T[x, c]`` (a base unit and two per
change; where no input can be None, so one combination always holds, one base unit for
every combination when all start from the same output, and for a categorical output
also when they do not, where that saves units and no nonzero weights grow: it writes
the most common first output, and each combination that starts elsewhere has one gated
unit writing the difference of the one-hots), each
with ``B_u sum_j (e_{j,c_j} - 1)`` added to its pre-activation (two nonzero weights per
input: its value's coordinate and ``one``). That term is 0 where every categorical
input holds ``c`` and at most ``-B_u`` elsewhere (an input that is None, the zero
vector, included); it cancels two terms of size ``B_u``, whose float32
rounding `numerical_mlp.float32_step_problem` bounds with the step's own; with
``B_u`` more than one above the unit's own largest pre-activation over the input
range (``L_i (x_max + e - b_i) + 1/2``, so units of late steps get small gates), every
unit of another combination is exactly 0, and the units of ``c`` discretise ``x`` as
the plain MLP does. An error ``d`` in the categorical coordinates shifts a unit by at
most ``B_u k d``, which `gate_error` turns into an equivalent input error that the
builder adds to ``x``'s own before checking the discretisation margin.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from rasplang.backend.chambers.gated_mlp import gated_mlp
from rasplang.backend.chambers.none_flags import with_none_units
from rasplang.backend.chambers.numerical_mlp import changes
from rasplang.backend.craft.blocks import MLP
from rasplang.backend.spaces import ONE, BosState, SOpSpace
from rasplang.values import typed_key

_Unit = tuple[tuple[int, ...], list[int], Any]


class _Impossible:
    """A grid cell whose combination of input values never occurs (see `possible`)."""

    def __repr__(self) -> str:
        return "IMPOSSIBLE"


#: Marks a grid cell no input reaches; its output is free, so no unit is spent on it.
IMPOSSIBLE = _Impossible()


def possible(ys: Sequence[Any]) -> list[Any] | None:
    """``ys`` with each IMPOSSIBLE cell given its nearest possible neighbour's value (the
    earlier one first), so a discretisation changes value only where it must; None when
    no cell is possible."""
    seen = [i for i, y in enumerate(ys) if y is not IMPOSSIBLE]
    if not seen:
        return None
    out, last = list(ys), ys[seen[0]]
    for i, y in enumerate(ys):
        if y is IMPOSSIBLE:
            out[i] = last
        else:
            last = y
    return out


def _layout(grid: np.ndarray, out: SOpSpace, axis: int) -> list[_Unit]:
    """Units summing over ``axis``: ``(other indices, rows along axis, output)``."""
    units: dict[tuple[tuple[int, ...], Any], list[int]] = defaultdict(list)
    outputs: dict[tuple[tuple[int, ...], Any], Any] = {}
    for idx in np.ndindex(*grid.shape):
        y = grid[idx]
        if y is IMPOSSIBLE or not out.encode(y).any():
            continue
        rest = idx[:axis] + idx[axis + 1:]
        key = (rest, typed_key(y))
        units[key].append(idx[axis])
        outputs.setdefault(key, y)
    return [(key[0], rows, outputs[key]) for key, rows in units.items()]


def lookup_units(grid: np.ndarray, out: SOpSpace) -> int:
    """Hidden units `lookup_mlp` uses (None units aside)."""
    return min((len(_layout(grid, out, a)) for a in range(grid.ndim)), default=0)


def lookup_mlp(label: str, inputs: Sequence[SOpSpace], grid: np.ndarray, out: SOpSpace,
               bos: BosState) -> MLP:
    """``enc(grid[i_1, ..., i_k])`` where input ``j`` holds its ``i_j``-th value."""
    k = len(inputs)
    layouts = [_layout(grid, out, a) for a in range(k)]
    axis = min(range(k), key=lambda a: len(layouts[a]))
    units = layouts[axis]
    offsets = np.cumsum([0, *(len(s.directions) for s in inputs)])
    in_dirs = [d for s in inputs for d in s.directions] + [ONE]
    w_in = np.zeros((len(in_dirs), len(units)))
    w_out = np.zeros((len(units), len(out.directions)))
    others = [j for j in range(k) if j != axis]
    for u, (rest, rows, y) in enumerate(units):
        for j, i in zip(others, rest):
            w_in[offsets[j] + i, u] = 1.0
        w_in[[offsets[axis] + r for r in rows], u] = 1.0
        w_in[-1, u] = -(k - 1.0)
        w_out[u] = out.encode(y)
    in_dirs, w_in, w_out = with_none_units(in_dirs, w_in, w_out, list(inputs), out)
    return gated_mlp(label, in_dirs, w_in, out.directions, w_out, bos)


def lookup_error(inputs: Sequence[SOpSpace]) -> float:
    """Bound on a lookup output's error from its inputs' errors."""
    per_unit = sum(len(s.values) * s.error for s in inputs)
    return float(np.prod([max(1, len(s.values)) for s in inputs])) * per_unit


def _gate_bound(xs: np.ndarray, error: float, mlp_exactness: float) -> float:
    """One more than the largest pre-activation any unit can reach (slope times the
    range, plus the 1/2 shift)."""
    gaps = np.diff(xs)
    if not len(gaps):
        return 2.0
    slope = mlp_exactness / float(gaps[gaps > 0].min())
    return slope * (float(xs[-1] - xs[0]) + error) + 2.0


def gate_error(xs: Sequence[float], error: float, cats: Sequence[SOpSpace],
               mlp_exactness: float) -> float:
    """The categorical inputs' errors as an equivalent error of the numerical input."""
    xs = np.asarray(xs, dtype=float)
    gaps = np.diff(xs)
    if not len(gaps) or not any(c.error for c in cats):
        return 0.0
    slope = mlp_exactness / float(gaps[gaps > 0].min())
    return _gate_bound(xs, error, mlp_exactness) * sum(c.error for c in cats) / slope


def gated_discretising_mlp(label: str, num: SOpSpace, xs: Sequence[float],
                           cats: Sequence[SOpSpace], grid: np.ndarray, out: SOpSpace,
                           mlp_exactness: float, bos: BosState) -> MLP:
    """``enc(grid[i, c_1, ..., c_k])`` where ``num`` holds ``xs[i]`` (sorted) and
    categorical input ``j`` its ``c_j``-th value."""
    live = [(combo, xs, ys, mlp_exactness)
            for combo in itertools.product(*(range(len(c.values)) for c in cats))
            if (ys := possible(grid[(slice(None), *combo)].tolist())) is not None]
    return gated_steps_mlp(label, num, cats, live, max(xs, default=0.0), out, bos)


def gated_steps_mlp(label: str, num: SOpSpace, cats: Sequence[SOpSpace],
                    live: Sequence[tuple[tuple[int, ...], Sequence[float], Sequence[Any], float]],
                    x_max: float, out: SOpSpace, bos: BosState) -> MLP:
    """The units of `gated_discretising_mlp`, one discretisation per combination
    ``(combo, xs, ys, mlp_exactness)`` of ``live``, each over its own sorted ``xs``;
    ``x_max`` bounds ``num`` wherever a gate is closed."""
    offsets = 2 + np.cumsum([0, *(len(c.directions) for c in cats)])
    in_dirs = [num.directions[0], ONE, *(d for c in cats for d in c.directions)]
    cols_in: list[np.ndarray] = []
    cols_out: list[np.ndarray] = []

    def unit(gate: np.ndarray, value_weight: float, const: float, bound: float,
             write: np.ndarray) -> None:
        col = bound * gate
        col[0] += value_weight
        col[1] += const
        cols_in.append(col)
        cols_out.append(write)

    # one base unit for all when one combination always holds (no input is ever None) and
    # every combination starts from the same output; for a categorical output (one-hots,
    # whose differences are exact) also when they do not, where that takes fewer units
    # and no more nonzero weights: the base unit writes the most common first output
    # and a gated unit per other combination the difference
    firsts = [out.encode(ys[0]) for _, _, ys, _ in live]
    counts = defaultdict(int)
    for first in firsts:
        counts[first.tobytes()] += 1
    shared = bool(live) and not any(c.nullable for c in cats)
    if shared:
        common = max(firsts, key=lambda f: counts[f.tobytes()])
        if len(counts) > 1:
            gate_nonzeros = len(cats) + 1  # each input's value coordinate, and one
            own = sum(gate_nonzeros + np.count_nonzero(f) for f in firsts)
            anchored = 1 + np.count_nonzero(common) + sum(
                gate_nonzeros + np.count_nonzero(f - common) for f in firsts
                if f.tobytes() != common.tobytes())
            shared = not out.numerical and counts[common.tobytes()] > 1 and anchored <= own
    if shared:
        unit(np.zeros(len(in_dirs)), 0.0, 1.0, 0.0, common)
    for (combo, xs, ys, mlp_exactness), first in zip(live, firsts):
        xs = np.asarray(xs, dtype=float)
        # the gate's rows: e_c - 1 for each input (its value's coordinate, through one)
        gate = np.zeros(len(in_dirs))
        for j, i in enumerate(combo):
            gate[offsets[j] + i] += 1.0
            gate[1] -= 1.0
        if not shared:
            unit(gate, 0.0, 1.0, 2.0, first)
        elif first.tobytes() != common.tobytes():
            unit(gate, 0.0, 1.0, 2.0, first - common)
        for i in changes(ys).tolist():
            slope = mlp_exactness / (xs[i] - xs[i - 1])
            mid = (xs[i] + xs[i - 1]) / 2
            delta = out.encode(ys[i]) - out.encode(ys[i - 1])
            # off-combination this unit needs at least its largest pre-activation + 1
            bound = slope * (x_max + num.error - mid) + 2.0
            for shift, sign in ((0.5, 1.0), (-0.5, -1.0)):
                unit(gate, slope * num.scale, shift - slope * mid, bound, sign * delta)
    w_in = np.stack(cols_in, axis=1) if cols_in else np.zeros((len(in_dirs), 0))
    w_out = np.stack(cols_out) if cols_out else np.zeros((0, len(out.directions)))
    return gated_mlp(label, in_dirs, w_in, out.directions, w_out, bos)


def gated_units(xs: Sequence[float], grid: np.ndarray) -> int:
    """Hidden units `gated_discretising_mlp` uses at most (it may share the base unit)."""
    total = 0
    for combo in itertools.product(*(range(n) for n in grid.shape[1:])):
        ys = possible(grid[(slice(None), *combo)].tolist())
        total += 1 + 2 * len(changes(ys)) if ys is not None else 0
    return total
