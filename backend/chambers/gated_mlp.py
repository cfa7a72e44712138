"""An MLP whose hidden units are switched off at the BOS position.

Every chamber's MLP is built from rows over named input directions (the ``one``
direction plays the role of a bias) and columns over output directions. This module
adds one more input row, the BOS direction, with weight ``-B_h`` on hidden unit ``h``,
where ``B_h = max(0, p_h) + 1`` and ``p_h`` is the unit's pre-activation at the BOS
position, computed exactly from the known BOS state of its inputs. A unit with
``p_h <= -1`` is already off there with the same margin and gets no gate (a lookup
over two or more inputs, whose BOS states are zero, or a ramp whose threshold lies
above the input's BOS value), which keeps the weights sparse.

Why: at BOS, ``relu(p_h - B_h) = 0`` with margin 1, so every MLP writes exactly 0 at
BOS (and stays 0 under input perturbations below 1). At a real position the BOS
direction is 0 and the unit is unchanged. So the BOS state of every MLP-computed SOp
is the zero vector, which attention heads rely on (see ``attention.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rasplang.backend.craft.bases import BasisDirection, VectorSpace, add_rows, join
from rasplang.backend.craft.blocks import MLP
from rasplang.backend.craft.maps import LinearMap
from rasplang.backend.spaces import BosState


def gated_mlp(
    label: str,
    in_dirs: Sequence[BasisDirection],
    w_in: np.ndarray,
    out_dirs: Sequence[BasisDirection],
    w_out: np.ndarray,
    bos: BosState,
) -> MLP:
    """An MLP ``relu(x @ w_in) @ w_out`` gated off at BOS.

    ``w_in`` is [len(in_dirs), hidden] (rows may repeat a direction; they are summed),
    ``w_out`` is [hidden, len(out_dirs)]; ``bos`` gives input coordinates at BOS.
    """
    hidden = w_in.shape[1]
    in_space = join(VectorSpace(dict.fromkeys(in_dirs)), VectorSpace([bos.direction]))
    first = np.zeros((in_space.dim, hidden))
    add_rows(first, in_space.indices(list(in_dirs)), w_in)
    at_bos = bos.vector(in_space.basis)
    at_bos[in_space.index_of(bos.direction)] = 0.0
    pre = at_bos @ first
    first[in_space.index_of(bos.direction)] -= np.where(pre > -1.0, np.maximum(pre, 0.0) + 1.0,
                                                        0.0)
    hidden_space = VectorSpace(BasisDirection(f"{label}:hidden", i) for i in range(hidden))
    out_space = VectorSpace(dict.fromkeys(out_dirs))
    second = np.zeros((hidden, out_space.dim))
    cols = out_space.indices(list(out_dirs))
    add_rows(second.T, cols, w_out.T)
    return MLP(LinearMap(in_space, hidden_space, first),
               LinearMap(hidden_space, out_space, second), label=label)
