"""The craft IR: spaces, maps, blocks."""

from __future__ import annotations

import numpy as np
import pytest

from rasplang.backend.craft.bases import (
    BasisDirection,
    VectorInBasis,
    VectorSpace,
    join,
)
from rasplang.backend.craft.blocks import MLP
from rasplang.backend.craft.maps import (
    BilinearMap,
    LinearMap,
    constant_blocks,
    factor_linear,
)

A, B, C = (BasisDirection("x", v) for v in "abc")


def test_space_index_lookup_and_index_arrays():
    """index_of is positional and indices() maps a subspace to an index array."""
    space = VectorSpace([A, B, C])
    assert space.index_of(C) == 2
    assert space.indices([C, A]).tolist() == [2, 0]
    with pytest.raises(KeyError, match="x:d"):
        space.index_of(BasisDirection("x", "d"))


def test_space_rejects_repeats_and_join_keeps_order():
    """A space refuses a repeated direction; join keeps first occurrences in order."""
    with pytest.raises(ValueError, match="repeat"):
        VectorSpace([A, A])
    assert join(VectorSpace([B, A]), VectorSpace([A, C])).basis == (B, A, C)


def test_vector_projection_and_sum():
    """Projection reads absent directions as 0; sums join the spaces."""
    v = VectorInBasis(VectorSpace([A, B]), np.array([1.0, 2.0]))
    assert v.project(VectorSpace([B, C])).magnitudes.tolist() == [2.0, 0.0]
    w = v + VectorInBasis(VectorSpace([C]), np.array([1.0]))
    assert w.project(VectorSpace([A, B, C])).magnitudes.tolist() == [1.0, 2.0, 1.0]


def test_bilinear_and_linear_factors_are_exact():
    """factor() reproduces a dense matrix exactly with rank min(L, R)."""
    rng = np.random.default_rng(0)
    m = rng.normal(size=(3, 5))
    left, right = BilinearMap(VectorSpace([A, B, C]), VectorSpace(
        BasisDirection("k", i) for i in range(5)), m).factor()
    assert left.shape == (3, 3)
    assert np.array_equal(left @ right.T, m)
    a, b = factor_linear(m.T)
    assert a.shape[1] == 3 and np.array_equal(a @ b, m.T)


def _space(name: str, n: int) -> VectorSpace:
    return VectorSpace(BasisDirection(name, i) for i in range(n))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (6, 9), (40, 40), (33, 17)])
def test_block_factors_are_exact_and_never_larger(shape):
    """factor() is exact, of rank at most min(L, R), and never has more nonzeros than
    the identity factoring, on staircases (a comparison of sorted values, scaled and with
    an extra entry as a BOS column has), few-valued and dense random tables."""
    rng = np.random.default_rng(sum(shape))
    q, k = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :] * shape[0] / shape[1]
    cases = [60.0 * (k < q), 7.5 * (k <= q) - 2.0 * (k > q), (k == q) * 1.0,
             rng.integers(0, 3, shape).astype(float), rng.normal(size=shape), np.zeros(shape)]
    for m in cases:
        m = m.copy()
        m[0, -1] += 0.25
        left, right = BilinearMap(_space("q", shape[0]), _space("k", shape[1]), m).factor()
        assert np.array_equal(left @ right.T, m)
        assert left.shape[1] == right.shape[1] <= min(shape)
        identity = min(shape) + np.count_nonzero(m)  # the identity and the matrix
        assert np.count_nonzero(left) + np.count_nonzero(right) <= identity


def test_staircase_factors_take_n_log_n_entries():
    """A strict comparison of 1,024 sorted values (524,288 ones) factors into 1,023
    blocks with about n log2 n nonzeros instead of the identity's n^2 / 2 + n."""
    n = 1024
    m = np.tril(np.ones((n, n)), -1)
    blocks = constant_blocks(m, n)
    assert len(blocks) == n - 1
    covered = np.zeros_like(m)
    for rows, cols, value in blocks:
        covered[np.ix_(rows, cols)] += value
    assert np.array_equal(covered, m)
    left, right = BilinearMap(_space("q", n), _space("k", n), m).factor()
    assert np.array_equal(left @ right.T, m)
    assert np.count_nonzero(left) + np.count_nonzero(right) <= n * 11
    assert constant_blocks(np.random.default_rng(0).normal(size=(50, 50)), 50) is None


def test_mlp_computes_relu_then_linear():
    """An MLP computes relu(x W1) W2 on its output space."""
    hidden = VectorSpace([BasisDirection("h", 0)])
    mlp = MLP(LinearMap(VectorSpace([A]), hidden, np.array([[-1.0]])),
              LinearMap(hidden, VectorSpace([B]), np.array([[3.0]])))
    x = VectorInBasis(VectorSpace([A]), np.array([[-2.0], [5.0]]))
    out = mlp(x).project(VectorSpace([A, B])).magnitudes
    assert out.tolist() == [[0.0, 6.0], [0.0, 0.0]]
