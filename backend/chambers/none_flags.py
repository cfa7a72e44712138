"""None in MLPs: switching units off where an input is None, and writing None.

Indicators. Every nullable input has a None indicator ``i(x) = w . x + c`` that is
exactly 1 where the input is None and 0 elsewhere (``SOpSpace.none_indicator``): the
flag direction of a numerical SOp, or ``1 - sum_v e_v`` for a categorical one.

Gating (`gate`). A unit whose pre-activation ``p`` must be 0 where an input is None
gets ``-B sum_j i_j`` added, with ``B`` at least 1 more than the largest ``p`` can be at
such a position (the caller bounds it from the value ranges). Where no input is None
every ``i_j`` is 0 and the unit is unchanged; where one is, ``p - B sum_j i_j <= -1``
and the unit outputs exactly 0 with a margin of 1, which absorbs indicator errors up to
``1 / B``.

Writing None (`none_units`). The output is None where any input is None (`evaluate`
does not call ``f`` then): with ``s = sum_j i_j``, an integer, the two units
``relu(s) - relu(s - 1) = min(1, s)`` are exactly ``[some input is None]`` (one unit
``relu(s)`` for a single nullable input), and they write ``enc(None)``: the None flag of
a numerical output, nothing for a categorical output (whose None is the zero vector).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rasplang.backend.craft.bases import BasisDirection
from rasplang.backend.spaces import ONE, SOpSpace

Rows = tuple[list[BasisDirection], np.ndarray]


def indicators(spaces: Sequence[SOpSpace]) -> Rows:
    """``(directions, [len, 1] weights)`` of ``sum_j i_j`` over the nullable ``spaces``
    (``one`` carries the constants); no rows if none is nullable."""
    dirs: list[BasisDirection] = []
    weights: list[float] = []
    seen: set[int] = set()
    for space in spaces:
        ind = space.none_indicator()
        if ind is None or id(space) in seen:
            continue
        seen.add(id(space))
        d, w, c = ind
        dirs += [*d, ONE]
        weights += [*w.tolist(), c]
    return dirs, np.asarray(weights, dtype=float).reshape(-1, 1)


def gate(in_dirs: list[BasisDirection], w_in: np.ndarray, spaces: Sequence[SOpSpace],
         bound: np.ndarray) -> tuple[list[BasisDirection], np.ndarray]:
    """Rows added to ``w_in`` ([len(in_dirs), units]) that switch unit ``u`` off where
    any of ``spaces`` is None; ``bound[u]`` bounds its pre-activation there."""
    dirs, weights = indicators(spaces)
    if not dirs:
        return in_dirs, w_in
    big = np.maximum(np.asarray(bound, dtype=float), 0.0) + 1.0
    return [*in_dirs, *dirs], np.vstack([w_in, -weights * big[None, :]])


def none_units(spaces: Sequence[SOpSpace], out: SOpSpace,
               ) -> tuple[list[BasisDirection], np.ndarray, np.ndarray]:
    """``(in_dirs, w_in, w_out)`` of units writing ``enc(None)`` where any of ``spaces``
    is None; no units if ``enc(None)`` is zero or no input is nullable."""
    none = out.encode(None)
    dirs, weights = indicators(spaces)
    if not dirs or not none.any():
        return [], np.zeros((0, 0)), np.zeros((0, len(out.directions)))
    if sum(d == ONE for d in dirs) == 1:  # one nullable input: relu(i)
        return dirs, weights, none[None, :]
    w_in = np.vstack([np.hstack([weights, weights]), [[0.0, -1.0]]])  # relu(s), relu(s - 1)
    return [*dirs, ONE], w_in, np.stack([none, -none])


def none_unit_count(spaces: Sequence[SOpSpace], out: SOpSpace) -> int:
    """How many units `with_none_units` adds for these inputs and output."""
    return none_units(spaces, out)[1].shape[1]


def with_none_units(in_dirs: list[BasisDirection], w_in: np.ndarray, w_out: np.ndarray,
                    spaces: Sequence[SOpSpace], out: SOpSpace,
                    ) -> tuple[list[BasisDirection], np.ndarray, np.ndarray]:
    """An MLP's ``(in_dirs, w_in, w_out)`` with `none_units` appended as extra units."""
    dirs, extra_in, extra_out = none_units(spaces, out)
    if not dirs:
        return in_dirs, w_in, w_out
    rows, units = w_in.shape
    new_in = np.zeros((rows + len(dirs), units + extra_in.shape[1]))
    new_in[:rows, :units] = w_in
    new_in[rows:, units:] = extra_in
    return [*in_dirs, *dirs], new_in, np.vstack([w_out, extra_out])
