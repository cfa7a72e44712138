"""How each SOp lives in the residual stream: its directions, values and BOS state.

Categorical SOps get one direction ``BasisDirection(label, value)`` per value (None
gets no direction: it is the zero vector). Numerical SOps get one direction
``BasisDirection(label)`` whose coordinate times ``scale`` is the value. A categorical
`Full` is the ``one`` direction itself and a numerical one is ``one`` scaled by the
fill, so constants cost no residual dimensions.

``bos`` holds the node's coordinates at the BOS position (position 0), which the
compiler knows exactly: MLP outputs are gated to zero there, an Aggregate holds its
default and a Full its fill. ``error`` bounds the deviation of any coordinate from its
exact value at real positions (from softmax leakage; rounding is not included).
"""

from __future__ import annotations

import numbers
from typing import Any

import attrs
import numpy as np
from rasplang.backend.craft.bases import BasisDirection, VectorSpace

ONE = BasisDirection("one")


def bos_direction(bos: Any) -> BasisDirection:
    """The direction set only at the BOS position (``tokens:BOS`` as in tracr)."""
    return BasisDirection("tokens", bos)


@attrs.frozen(eq=False)
class SOpSpace:
    """The residual-stream encoding of one SOp."""

    label: str
    numerical: bool
    values: tuple[Any, ...]  # categorical: one per direction; numerical: the value set
    directions: tuple[BasisDirection, ...]
    bos: np.ndarray  # coordinates at the BOS position, one per direction
    scale: float = 1.0  # numerical only: value = coordinate * scale
    error: float = 0.0
    _index: dict | None = attrs.field(default=None, init=False, repr=False)

    @property
    def space(self) -> VectorSpace:
        """The directions as a vector space."""
        return VectorSpace(self.directions)

    def encode(self, value: Any) -> np.ndarray:
        """Coordinates of ``value`` on ``directions`` (None -> zeros for categorical)."""
        out = np.zeros(len(self.directions))
        if self.numerical:
            out[0] = 0.0 if value is None else float(value) / (self.scale or 1.0)
        elif value is not None:
            out[self.value_index(value)] = 1.0
        return out

    def value_index(self, value: Any) -> int:
        """Position of ``value`` among the categorical values (compared with ==)."""
        index = self._index
        if index is None:
            index = {}
            for i, v in enumerate(self.values):
                index.setdefault((type(v), v), i)
                index.setdefault(v, i)
            object.__setattr__(self, "_index", index)
        found = index.get((type(value), value), index.get(value))
        if found is not None:
            return found
        raise KeyError(f"{value!r} is not a value of {self.label!r}: {list(self.values)[:10]}")

    def readout(self) -> np.ndarray:
        """Coefficients turning the coordinates into the numeric value (linear)."""
        if self.numerical:
            return np.array([self.scale])
        return np.array([float(v) for v in self.values])

    def is_numeric_valued(self) -> bool:
        """Whether every (non-None) value is a real number."""
        return all(isinstance(v, numbers.Real) for v in self.values)


def categorical_space(label: str, values: tuple[Any, ...], bos_value: Any = None,
                      error: float = 0.0) -> SOpSpace:
    """A fresh one-hot space for ``values`` (None dropped), holding ``bos_value`` at BOS."""
    kept = tuple(v for v in values if v is not None)
    space = SOpSpace(label, False, kept, tuple(BasisDirection(label, v) for v in kept),
                     np.zeros(len(kept)), error=error)
    return attrs.evolve(space, bos=space.encode(bos_value))


def numerical_space(label: str, values: tuple[Any, ...], bos_value: Any = None,
                    error: float = 0.0) -> SOpSpace:
    """A fresh one-dimensional space, holding ``bos_value`` (None -> 0) at BOS."""
    bos = 0.0 if bos_value is None else float(bos_value)
    return SOpSpace(label, True, values, (BasisDirection(label),), np.array([bos]), error=error)
