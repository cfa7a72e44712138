"""Linear and bilinear maps between vector spaces, stored as dense numpy matrices."""

from __future__ import annotations

import attrs
import numpy as np

from rasplang.backend.craft.bases import VectorInBasis, VectorSpace, add_rows


def _check_shape(owner: LinearMap | BilinearMap, rows: VectorSpace, cols: VectorSpace) -> None:
    """Refuse ``owner.matrix`` unless it is ``[rows.dim, cols.dim]``."""
    expected = (rows.dim, cols.dim)
    if owner.matrix.shape != expected:
        raise ValueError(f"{type(owner).__name__} matrix has shape {owner.matrix.shape}, "
                         f"expected {expected}")


@attrs.define(eq=False)
class LinearMap:
    """``y = x @ matrix``: ``matrix`` is [input_space.dim, output_space.dim]."""

    input_space: VectorSpace
    output_space: VectorSpace
    matrix: np.ndarray

    def __attrs_post_init__(self) -> None:
        _check_shape(self, self.input_space, self.output_space)

    def __call__(self, x: VectorInBasis) -> VectorInBasis:
        return VectorInBasis(self.output_space,
                             x.project(self.input_space).magnitudes @ self.matrix)

    def embedded(self, residual: VectorSpace) -> np.ndarray:
        """The same map as a [residual.dim, output_space.dim] matrix (rows by index)."""
        out = np.zeros((residual.dim, self.output_space.dim))
        add_rows(out, residual.indices(self.input_space), self.matrix)
        return out


@attrs.define(eq=False)
class BilinearMap:
    """``x_left @ matrix @ x_right.T``: ``matrix`` is [left_space.dim, right_space.dim].

    For attention, left is the query side and right the key side.
    """

    left_space: VectorSpace
    right_space: VectorSpace
    matrix: np.ndarray

    def __attrs_post_init__(self) -> None:
        _check_shape(self, self.left_space, self.right_space)

    def __call__(self, left: VectorInBasis, right: VectorInBasis) -> np.ndarray:
        lm = left.project(self.left_space).magnitudes
        rm = right.project(self.right_space).magnitudes
        return lm @ self.matrix @ np.swapaxes(rm, -1, -2)

    def factor(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact factors ``(w_left [L, r], w_right [R, r])`` with ``w_left @ w_right.T``
        equal to ``matrix``; ``r = min(L, R)`` (the smaller side is the identity, so no
        rounding is introduced)."""
        n_left, n_right = self.matrix.shape
        if n_left <= n_right:
            return np.eye(n_left), self.matrix.T.copy()
        return self.matrix.copy(), np.eye(n_right)


def factor_linear(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact factors ``(a [I, r], b [r, O])`` of ``matrix [I, O]`` with ``r = min(I, O)``."""
    n_in, n_out = matrix.shape
    if n_out <= n_in:
        return matrix.copy(), np.eye(n_out)
    return np.eye(n_in), matrix.copy()
