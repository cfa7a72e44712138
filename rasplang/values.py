"""Value identity and typed value tables: one definition of "the same value".

`typed_key` is it. Two values are one entry of a `Table` only if they are equal, of the
same type and print the same (``1``, ``1.0`` and ``True`` are three entries, and so are
``0.0`` and ``-0.0``, also inside tuples), because `rasplang.evaluate` returns exactly
the object a function returns. ``==`` merges them into one value of a value set
(`sorted_values`), as a compiled model holds them; `rasplang.Analysis.merged_index` maps
one to the other.

`identity_dependent` says which values ``==`` compares by object identity, where
`evaluate` (one object per position) and any table (one object per value) disagree.
"""

from __future__ import annotations

import enum
import math
import numbers
import types
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import numpy as np

from rasplang.nodes import Value

_PLAIN_NUMBERS = frozenset({int, float, bool})
_PLAIN = frozenset({int, float, bool, str})
#: Values with identity equality that are one object however often they are made.
_SINGLETONS = (type(None), bool, type, enum.Enum, types.ModuleType, type(Ellipsis),
               type(NotImplemented))


def sort_key(value: Any) -> tuple[int, Any]:
    """A total order over mixed values: None, then numbers, then str, then the rest."""
    if type(value) in _PLAIN_NUMBERS:  # fast path for the large numeric sets
        return (1, value)
    if value is None:
        return (0, 0)
    if isinstance(value, numbers.Real):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, repr(value))


def sorted_values(values: Iterable[Value]) -> tuple[Value, ...]:
    """Deduplicate (by ``==``/hash, as a set does) and sort with `sort_key`."""
    unique = set(values)
    if all(type(v) in _PLAIN_NUMBERS for v in unique):
        return tuple(sorted(unique))  # the same order, without a key per value
    return tuple(sorted(unique, key=sort_key))


def typed_key(value: Value) -> Any:
    """A key equal for two values only if they are equal, of the same type and print the
    same, also inside tuples: ``1``, ``1.0``, ``True`` are apart, and so are ``-0.0`` and
    ``0.0``, and ``(1, 'a')`` and ``(1.0, 'a')``."""
    if type(value) is tuple:
        return (tuple, tuple(typed_key(v) for v in value))
    if is_negative_zero(value):
        return (type(value), value, "-")
    return (type(value), value)


def identity_dependent(value: Value) -> bool:
    """Whether ``==`` between two copies of ``value``, made by two calls of one function,
    may depend on which objects they are.

    `rasplang.evaluate` calls a function once per position and compares the objects it
    returned; the analysis, the interpreter and a compiled model hold one object per
    value. The two agree only where ``==`` looks at values, not at objects. It does not:

    - for a value not equal to itself (``x == x`` is False, e.g. ``Decimal('nan')``);
    - for a tuple or frozenset holding a float NaN or such a value, at any depth:
      ``(nan,) == (nan,)`` holds only when both hold the same NaN object;
    - for an object with the default ``object.__eq__`` (a plain class, ``object()``, a
      function), which is identity, unless it is one object however often it is made
      (None, a bool, an enum member, a class, a module).

    A float NaN alone is not: ``nan == nan`` is always False, whichever objects.
    """
    kind = type(value)
    if kind in _PLAIN or isinstance(value, float):
        return False
    if isinstance(value, (tuple, frozenset)):
        return any(v != v if isinstance(v, float) else identity_dependent(v) for v in value)
    if kind.__eq__ is object.__eq__:
        return not isinstance(value, _SINGLETONS)
    try:
        return not bool(value == value)
    except Exception:  # an == that raises or returns no bool: nothing to rely on
        return True


def is_negative_zero(value: Value) -> bool:
    """Whether ``value`` is the float ``-0.0``."""
    return isinstance(value, float) and value == 0 and math.copysign(1.0, value) < 0


def distinct_typed(values: Iterable[Value]) -> tuple[Value, ...]:
    """Deduplicate keeping values that are equal but of different types (1, 1.0, True)."""
    return tuple({typed_key(v): v for v in values}.values())


def type_collisions(values: Iterable[Value], distinct: bool = False
                    ) -> tuple[tuple[Value, ...], ...]:
    """Groups of values that compare equal but differ in type, e.g. ``(0, False)``
    (``distinct``: the values are already `distinct_typed`)."""
    groups: dict[Value, list[Value]] = {}
    for v in values if distinct else distinct_typed(values):
        groups.setdefault(v, []).append(v)
    return tuple(tuple(g) for g in groups.values() if len(g) > 1)


def fast_key(value: Value) -> Any:
    """`typed_key`, without the checks for the common types."""
    kind = type(value)
    if kind is bool or kind is int or kind is str:
        return (kind, value)
    return typed_key(value)


@attrs.frozen
class Table:
    """The typed values of one node, in code order, and the reverse index (built on
    first use: the interpreter never looks most tables up)."""

    values: tuple[Value, ...]
    _index: dict[Any, int] | None = attrs.field(default=None, repr=False, eq=False)

    @classmethod
    def of(cls, values: Iterable[Value]) -> Table:
        """A table of ``values`` (duplicates by `typed_key` dropped, order kept)."""
        return cls((), {}).with_values(values)

    @property
    def index(self) -> dict[Any, int]:
        """`typed_key` -> code."""
        if self._index is None:  # the values are distinct: no checks needed
            object.__setattr__(self, "_index", {fast_key(v): c for c, v in
                                                enumerate(self.values)})
        return self._index

    def __len__(self) -> int:
        return len(self.values)

    def code(self, value: Value) -> int | None:
        """The code of ``value``, or None when it is not in the table."""
        return self.index.get(typed_key(value))

    def with_values(self, values: Iterable[Value]) -> Table:
        """This table plus the ``values`` it lacks (the same object when none is new)."""
        new_values = list(self.values)
        index = None
        for value in values:
            key = fast_key(value)
            if (index or self.index).get(key) is None:
                if index is None:
                    index = dict(self.index)
                index[key] = len(new_values)
                new_values.append(value)
        if index is None:
            return self
        return Table(tuple(new_values), index)

    def codes_of(self, values: Iterable[Value]) -> np.ndarray:
        """Codes of values known to be in the table, as an int32 array."""
        index = self.index
        return np.fromiter((index[fast_key(v)] for v in values), dtype=np.int32)

    def as_object_array(self) -> np.ndarray:
        """The values as a 1-D object array (for decoding codes with fancy indexing)."""
        return object_array(self.values)

    def none_codes(self) -> np.ndarray:
        """A bool array: which codes stand for None."""
        return np.array([v is None for v in self.values], dtype=bool).reshape(-1)

    def floats(self) -> np.ndarray:
        """Each value as a float64 (NaN for None and non-numbers)."""
        return np.array(
            [float(v) if isinstance(v, numbers.Real) else math.nan for v in self.values],
            dtype=np.float64).reshape(-1)


def object_array(values: Sequence[Value]) -> np.ndarray:
    """``values`` as a 1-D object array (tuples stay elements)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values) if len(values) else []
    return out
