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
    _factors: tuple[np.ndarray, np.ndarray] | None = attrs.field(
        default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_shape(self, self.left_space, self.right_space)

    @classmethod
    def from_factors(cls, left_space: VectorSpace, right_space: VectorSpace,
                     w_left: np.ndarray, w_right: np.ndarray) -> BilinearMap:
        """The map ``w_left @ w_right.T``, kept as those factors (`factor` returns them)."""
        out = cls(left_space, right_space, w_left @ w_right.T)
        out._factors = (w_left, w_right)
        return out

    def __call__(self, left: VectorInBasis, right: VectorInBasis) -> np.ndarray:
        lm = left.project(self.left_space).magnitudes
        rm = right.project(self.right_space).magnitudes
        return lm @ self.matrix @ np.swapaxes(rm, -1, -2)

    def factor(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact factors ``(w_left [L, r], w_right [R, r])`` with ``w_left @ w_right.T``
        equal to ``matrix`` and ``r <= min(L, R)``, whichever of two has fewer nonzeros:
        the smaller side the identity, or one column per block of `constant_blocks`
        (a comparison of ordered values, whose table is a staircase, takes
        ``O(n log n)`` nonzeros instead of ``n^2 / 2``). Either way every entry of the
        product is one product ``value * 1`` plus exact zeros, so no rounding is
        introduced. Computed once (the model size estimate and assembly both ask)."""
        if self._factors is None:
            self._factors = self._factor()
        return self._factors

    def _factor(self) -> tuple[np.ndarray, np.ndarray]:
        n_left, n_right = self.matrix.shape
        if n_left <= n_right:
            plain = np.eye(n_left), self.matrix.T.copy()
        else:
            plain = self.matrix.copy(), np.eye(n_right)
        blocks = constant_blocks(self.matrix, min(n_left, n_right))
        if blocks is None:
            return plain
        left, right = np.zeros((n_left, len(blocks))), np.zeros((n_right, len(blocks)))
        for b, (rows, cols, value) in enumerate(blocks):
            left[rows, b] = value
            right[cols, b] = 1.0
        if np.count_nonzero(left) + np.count_nonzero(right) < sum(map(np.count_nonzero, plain)):
            return left, right
        return plain


def constant_blocks(matrix: np.ndarray, limit: int
                    ) -> list[tuple[np.ndarray, np.ndarray, float]] | None:
    """Rectangles ``(rows, cols, value)`` that partition ``matrix``'s nonzero entries,
    each constant: ``matrix`` is the sum of ``value`` on ``rows x cols``. None if that
    takes more than ``limit`` rectangles.

    Rows that are constant over the current columns form one rectangle per value; the
    others are split over the two halves of the columns, recursively. For a staircase
    (each row's nonzeros a run that grows from row to row, as in a comparison ``k < q``
    of sorted values) that is ``n - 1`` rectangles with ``O(n log n)`` entries in all.
    """
    out: list[tuple[np.ndarray, np.ndarray, float]] = []
    if not matrix.size:
        return out
    stack = [(np.arange(matrix.shape[0]), np.arange(matrix.shape[1]))]
    while stack:
        rows, cols = stack.pop()
        sub = matrix[np.ix_(rows, cols)]
        first = sub[:, 0]
        flat = (sub == first[:, None]).all(axis=1)
        for value in np.unique(first[flat]):
            if value:
                out.append((rows[flat & (first == value)], cols, float(value)))
        if len(out) > limit:
            return None
        rest = rows[~flat]
        if len(rest):  # two or more columns, since one column is always flat
            half = len(cols) // 2
            stack += [(rest, cols[half:]), (rest, cols[:half])]
    return out


def factor_linear(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact factors ``(a [I, r], b [r, O])`` of ``matrix [I, O]`` with ``r = min(I, O)``."""
    n_in, n_out = matrix.shape
    if n_out <= n_in:
        return matrix.copy(), np.eye(n_out)
    return np.eye(n_in), matrix.copy()
