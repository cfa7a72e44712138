"""How each SOp lives in the residual stream: its directions, values and BOS state.

Categorical SOps get one direction ``BasisDirection(label, value)`` per value. None
is the zero vector: its direction is implicit, the indicator ``1 - sum_v e_v`` (exactly
0 or 1 on a one-hot or zero vector), which any reader computes linearly from the
``one`` direction, and which the unembedding decodes as None (no logit above 1/2).
Numerical SOps get one direction ``BasisDirection(label)`` whose coordinate times
``scale`` is the value; one that can be None (``nullable``) gets a second direction
``BasisDirection(label, NONE_FLAG)``, 1 exactly where the value is None, and its value
coordinate is 0 there (a number alone cannot encode None). A categorical
`Full` is the ``one`` direction itself and a numerical one is ``one`` scaled by the
fill, so constants cost no residual dimensions.

``bos`` holds the node's coordinates at the BOS position (position 0), which the
compiler knows exactly: MLP outputs are gated to zero there, an Aggregate holds its
default and a Full its fill. ``error`` bounds the deviation of any coordinate from its
exact value at real positions in float64 (from softmax leakage; float64 rounding is
allowed for separately, `numerical_mlp.ROUNDING`); ``error32`` bounds it in float32,
rounding of every earlier layer included (`chambers.float32`). Both are per coordinate,
in value units for a numerical SOp.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import attrs
import numpy as np

from rasplang.backend.craft.bases import BasisDirection, VectorSpace
from rasplang.values import typed_key

ONE = BasisDirection("one")
#: The value of a nullable numerical SOp's second direction (``label:is_none``).
NONE_FLAG = "is_none"


def bos_direction(bos: Any) -> BasisDirection:
    """The direction set only at the BOS position (``tokens:BOS`` as in tracr)."""
    return BasisDirection("tokens", bos)


@attrs.define(eq=False)
class BosState:
    """What the chambers know about the BOS position (position 0): the direction set only
    there, and the coordinate every residual direction holds there, known exactly at
    compile time (``one`` and the BOS direction are 1; an MLP's outputs 0; an
    Aggregate's its default). The builder records each node's state as it registers
    the node's space; every chamber reads it through this one object."""

    direction: BasisDirection
    coords: dict[BasisDirection, float] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.coords.setdefault(ONE, 1.0)
        self.coords.setdefault(self.direction, 1.0)

    def at(self, direction: BasisDirection) -> float:
        """The coordinate of ``direction`` at BOS (0 for a direction never written)."""
        return self.coords.get(direction, 0.0)

    def vector(self, basis: Iterable[BasisDirection]) -> np.ndarray:
        """The coordinates at BOS of each direction of ``basis``."""
        return np.array([self.coords.get(d, 0.0) for d in basis])


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
    nullable: bool = False  # whether the SOp can be None
    error32: float = 0.0  # the same bound in float32, rounding included
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
            if value is None and self.nullable:
                out[1] = 1.0
        elif value is not None:
            out[self.value_index(value)] = 1.0
        return out

    def value_index(self, value: Any) -> int:
        """Position of ``value`` among the categorical values: the one of the same
        `typed_key`, else the first equal one (``==``)."""
        index = self._index
        if index is None:
            index = {}
            for i, v in enumerate(self.values):
                index.setdefault(typed_key(v), i)
                index.setdefault(v, i)
            object.__setattr__(self, "_index", index)
        found = index.get(typed_key(value), index.get(value))
        if found is not None:
            return found
        raise KeyError(f"{value!r} is not a value of {self.label!r}: {list(self.values)[:10]}")

    def readout(self) -> np.ndarray:
        """Coefficients turning the coordinates into the numeric value (linear)."""
        if self.numerical:
            return np.array([self.scale] + [0.0] * (len(self.directions) - 1))
        return np.array([float(v) for v in self.values])

    def none_indicator(self) -> tuple[tuple[BasisDirection, ...], np.ndarray, float] | None:
        """``(directions, weights, constant)`` with ``weights . x + constant`` equal to 1
        where the SOp is None and 0 elsewhere; None if the SOp is never None."""
        if not self.nullable:
            return None
        if self.numerical:
            return (self.directions[1],), np.ones(1), 0.0
        return self.directions, -np.ones(len(self.directions)), 1.0

    def is_numeric_valued(self) -> bool:
        """Whether every (non-None) value is a real number."""
        return all(isinstance(v, numbers.Real) for v in self.values)


def categorical_space(label: str, values: tuple[Any, ...], bos_value: Any = None,
                      error: float = 0.0, error32: float = 0.0) -> SOpSpace:
    """A fresh one-hot space for ``values`` (None dropped), holding ``bos_value`` at BOS."""
    kept = tuple(v for v in values if v is not None)
    space = SOpSpace(label, False, kept, tuple(BasisDirection(label, v) for v in kept),
                     np.zeros(len(kept)), error=error, nullable=len(kept) < len(values),
                     error32=error32)
    return attrs.evolve(space, bos=space.encode(bos_value))


def numerical_space(label: str, values: tuple[Any, ...], bos_value: Any = None,
                    error: float = 0.0, error32: float = 0.0) -> SOpSpace:
    """A fresh numerical space (a value direction, and a None flag if ``values`` holds
    None), holding ``bos_value`` (None -> all zeros) at BOS."""
    nullable = any(v is None for v in values)
    directions = (BasisDirection(label),) + ((BasisDirection(label, NONE_FLAG),) if nullable
                                             else ())
    bos = np.zeros(len(directions))
    bos[0] = 0.0 if bos_value is None else float(bos_value)
    return SOpSpace(label, True, values, directions, bos, error=error, nullable=nullable,
                    error32=error32)
