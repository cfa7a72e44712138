"""Basis directions, vector spaces (ordered tuples of directions) and vectors in them.

A `VectorSpace` keeps its directions in order and a dict from direction to index, so
`index_of` is O(1) and `indices(other)` turns a subspace into a numpy index array; all
placement of matrices into larger spaces is done with these index arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import numpy as np


@attrs.frozen(order=False)
class BasisDirection:
    """A named direction; categorical SOps have one per value (``value`` set)."""

    name: str
    value: Any = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


class VectorSpace:
    """An ordered tuple of distinct basis directions with O(1) index lookup."""

    __slots__ = ("_index", "basis")

    def __init__(self, basis: Iterable[BasisDirection]):
        self.basis: tuple[BasisDirection, ...] = tuple(basis)
        self._index: dict[BasisDirection, int] = {d: i for i, d in enumerate(self.basis)}
        if len(self._index) != len(self.basis):
            raise ValueError("a vector space cannot repeat a basis direction")

    @property
    def dim(self) -> int:
        """The number of directions."""
        return len(self.basis)

    def __len__(self) -> int:
        return len(self.basis)

    def __iter__(self):
        return iter(self.basis)

    def __contains__(self, direction: object) -> bool:
        return direction in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VectorSpace) and self.basis == other.basis

    def __hash__(self) -> int:
        return hash(self.basis)

    def __repr__(self) -> str:
        shown = ", ".join(str(d) for d in self.basis[:6])
        more = f", ... ({self.dim} in all)" if self.dim > 6 else ""
        return f"VectorSpace([{shown}{more}])"

    def index_of(self, direction: BasisDirection) -> int:
        """Position of ``direction``; KeyError naming it if absent."""
        try:
            return self._index[direction]
        except KeyError:
            raise KeyError(f"direction {direction} is not in {self!r}") from None

    def indices(self, sub: VectorSpace | Sequence[BasisDirection]) -> np.ndarray:
        """Positions of the directions of ``sub`` in this space, as an int array."""
        basis = sub.basis if isinstance(sub, VectorSpace) else sub
        return np.fromiter((self.index_of(d) for d in basis), dtype=np.intp, count=len(basis))


def join(*spaces: VectorSpace) -> VectorSpace:
    """Union of spaces, keeping the first occurrence order of each direction."""
    seen: dict[BasisDirection, None] = {}
    for space in spaces:
        for d in space.basis:
            seen.setdefault(d, None)
    return VectorSpace(seen)


@attrs.define(eq=False)
class VectorInBasis:
    """A vector, or a batch of vectors (leading axes), with coordinates in ``space``."""

    space: VectorSpace
    magnitudes: np.ndarray

    def __attrs_post_init__(self) -> None:
        if self.magnitudes.shape[-1] != self.space.dim:
            raise ValueError(
                f"magnitudes have last axis {self.magnitudes.shape[-1]}, "
                f"space has {self.space.dim} directions"
            )

    @classmethod
    def zeros(cls, space: VectorSpace, shape: tuple[int, ...] = ()) -> VectorInBasis:
        """The zero vector (or batch) in ``space``."""
        return cls(space, np.zeros((*shape, space.dim)))

    def project(self, target: VectorSpace) -> VectorInBasis:
        """Coordinates on ``target``'s directions (absent ones read as 0)."""
        out = np.zeros((*self.magnitudes.shape[:-1], target.dim))
        mine = [i for i, d in enumerate(target.basis) if d in self.space]
        src = self.space.indices([target.basis[i] for i in mine])
        out[..., mine] = self.magnitudes[..., src]
        return VectorInBasis(target, out)

    def __add__(self, other: VectorInBasis) -> VectorInBasis:
        space = join(self.space, other.space)
        return VectorInBasis(space, self.project(space).magnitudes
                             + other.project(space).magnitudes)


def add_rows(target: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``target[rows] += values``, summing the values of repeated rows.

    ``np.add.at`` does that but is slow on large matrices (seconds for 20,000 x 10,000);
    rows are almost always distinct, where fancy indexing is exact and fast.
    """
    rows = np.asarray(rows)
    if len(np.unique(rows)) == len(rows):
        target[rows] += values
    else:
        np.add.at(target, rows, values)
