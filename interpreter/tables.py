"""Value tables: the integer code of every value a node can take.

The analysis (`rasplang.analyze`) gives each SOp its value set, deduplicated with
``==``; there ``1``, ``1.0`` and ``True`` are one value. The interpreter must return
exactly the object `rasplang.evaluate` returns (``True`` stays a bool, a mean stays a
float), so its tables refine the analysis's sets by type: a value's key is
``(type(value), value)``.

A `Table` is immutable; `Table.with_values` returns a longer copy when a run meets a
value the plan did not know (e.g. the mean of a categorical Aggregate whose selection
holds several different numbers), so a plan can be shared by concurrent runs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

Value = Any

#: Largest integer a float64 holds exactly.
_EXACT = 2**53


def typed_key(value: Value) -> tuple[type, Value]:
    """The key that tells ``1``, ``1.0`` and ``True`` apart."""
    return (type(value), value)


def is_number(value: Value) -> bool:
    """Aggregate's notion of a number: int, float, bool (as `rasplang.evaluator`)."""
    return isinstance(value, numbers.Real)


@attrs.frozen
class Table:
    """The values of one node, in code order, and the reverse index."""

    values: tuple[Value, ...]
    index: dict[tuple[type, Value], int] = attrs.field(repr=False)

    @classmethod
    def of(cls, values: Iterable[Value]) -> Table:
        """A table of ``values`` (duplicates by `typed_key` dropped, order kept)."""
        return cls((), {}).with_values(values)

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
            key = typed_key(value)
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
        return np.fromiter((self.index[typed_key(v)] for v in values), dtype=np.int32)

    def as_object_array(self) -> np.ndarray:
        """The values as a 1-D object array (for decoding codes with fancy indexing)."""
        out = np.empty(len(self.values), dtype=object)
        out[:] = list(self.values) if self.values else []
        return out

    def none_codes(self) -> np.ndarray:
        """A bool array: which codes stand for None."""
        return np.array([v is None for v in self.values], dtype=bool).reshape(-1)

    def floats(self) -> np.ndarray:
        """Each value as a float64 (NaN for None and non-numbers)."""
        return np.array(
            [float(v) if is_number(v) else math.nan for v in self.values], dtype=np.float64
        ).reshape(-1)


@attrs.frozen
class NumericInfo:
    """What an Aggregate kernel needs to know about its input table.

    ``isnum[c]``: whether value ``c`` is a number. When ``exact``, every number is
    ``num[c] / denom`` with integers small enough that a sum of ``max_seq_len`` of them
    and ``count * denom`` stay below 2**53; then ``float(sum) / float(count * denom)`` is
    one correctly rounded division, exactly the float `rasplang.evaluator.mean` returns.
    Otherwise kernels sum ``fval`` and flag the result for exact resolution.
    """

    isnum: np.ndarray  # [n] uint8
    num: np.ndarray  # [n] int64
    fval: np.ndarray  # [n] float64
    denom: int
    exact: bool


def numeric_info(table: Table, max_seq_len: int) -> NumericInfo:
    """Build the `NumericInfo` of a table for sums of up to ``max_seq_len`` values."""
    n = len(table)
    isnum = np.zeros(n, dtype=np.uint8)
    fval = np.zeros(n, dtype=np.float64)
    fractions: list[tuple[int, Fraction]] = []
    exact = True
    for code, value in enumerate(table.values):
        if not is_number(value):
            continue
        isnum[code] = 1
        fval[code] = float(value)
        try:
            frac = Fraction(value)
        except (TypeError, ValueError, OverflowError):
            exact = False
            continue
        fractions.append((code, frac))
    num = np.zeros(n, dtype=np.int64)
    denom = 1
    if exact:
        for _, frac in fractions:
            denom = math.lcm(denom, frac.denominator)
            if denom * max_seq_len > _EXACT:
                exact = False
                break
    if exact:
        for code, frac in fractions:
            scaled = frac * denom
            if abs(scaled.numerator) * max_seq_len > _EXACT:
                exact = False
                break
            num[code] = scaled.numerator
    if not exact:
        num[:] = 0
        denom = 1
    return NumericInfo(isnum=isnum, num=num, fval=fval, denom=denom, exact=exact)
