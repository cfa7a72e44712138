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
from rasplang.backend.craft.maps import BilinearMap, LinearMap, factor_linear

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
    """factor() reproduces the matrix exactly with rank min(L, R)."""
    rng = np.random.default_rng(0)
    m = rng.normal(size=(3, 5))
    left, right = BilinearMap(VectorSpace([A, B, C]), VectorSpace(
        BasisDirection("k", i) for i in range(5)), m).factor()
    assert left.shape == (3, 3)
    assert np.array_equal(left @ right.T, m)
    a, b = factor_linear(m.T)
    assert a.shape[1] == 3 and np.array_equal(a @ b, m.T)


def test_mlp_computes_relu_then_linear():
    """An MLP computes relu(x W1) W2 on its output space."""
    hidden = VectorSpace([BasisDirection("h", 0)])
    mlp = MLP(LinearMap(VectorSpace([A]), hidden, np.array([[-1.0]])),
              LinearMap(hidden, VectorSpace([B]), np.array([[3.0]])))
    x = VectorInBasis(VectorSpace([A]), np.array([[-2.0], [5.0]]))
    out = mlp(x).project(VectorSpace([A, B])).magnitudes
    assert out.tolist() == [[0.0, 6.0], [0.0, 0.0]]
