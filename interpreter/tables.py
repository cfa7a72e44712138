"""Value tables: the integer code of every value a node can take.

The analysis (`rasplang.analyze`) gives each SOp its value set, deduplicated with
``==``; there ``1``, ``1.0`` and ``True`` are one value. The interpreter must return
exactly the object `rasplang.evaluate` returns (``True`` stays a bool, a mean stays a
float), so its tables refine the analysis's sets by type: a value's key is
`rasplang.analysis.typed_key`, the analysis's own typed identity.

A `Table` is immutable; `Table.with_values` returns a longer copy when a run meets a
value the plan did not know (e.g. the mean of a categorical Aggregate whose selection
holds several different numbers), so a plan can be shared by concurrent runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

from rasplang.analysis import typed_key
from rasplang.evaluator import is_number

Value = Any

#: Largest integer a float64 holds exactly.
_EXACT = 2**53


def identity_dependent(value: Value) -> bool:
    """Whether ``==`` between copies of ``value`` may depend on object identity.

    True for a value not equal to itself, and for a tuple or frozenset holding a float
    NaN (at any depth): ``(nan,) == (nan,)`` holds only when both hold the same NaN object,
    and `evaluate` calls ``f`` once per position where the interpreter calls it once per
    table value. A float NaN alone is not: ``nan == nan`` is always False.
    """
    if isinstance(value, float):
        return False
    if isinstance(value, (tuple, frozenset)):
        return any(v != v if isinstance(v, float) else identity_dependent(v) for v in value)
    try:
        return not bool(value == value)
    except Exception:
        return True


@attrs.frozen
class Table:
    """The values of one node, in code order, and the reverse index."""

    values: tuple[Value, ...]
    index: dict[tuple[Any, ...], int] = attrs.field(repr=False)

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


#: ``out`` markers of an Aggregate kernel for a query whose answer is not yet a code.
#: `MEAN`: a mean of several numbers, exact in ``acc[b, q]`` (count and the two limbs of
#: the scaled sum, see `NumericInfo`); the plan divides. `REEVALUATE`: a mean over a table
#: with no exact integer form, or several copies of an `UNCOMPARABLE` value; the plan
#: re-evaluates the sequence with `rasplang.evaluate_all`.
MEAN, REEVALUATE = -1, -3
#: `NumericInfo.kind` of a value: not a number; a number (several are averaged); a
#: non-number whose equality depends on object identity (`identity_dependent`), so that
#: whether several selected copies of it are "the same" is left to `evaluate`.
OTHER, NUMBER, UNCOMPARABLE = 0, 1, 2
#: A scaled sum is kept in two int64 limbs, ``high * 2**LIMB_BITS + low``.
LIMB_BITS = 32
_LIMB = 1 << LIMB_BITS
_INT64_MAX = 2**63 - 1


@attrs.frozen
class NumericInfo:
    """What an Aggregate kernel needs to know about its input table.

    ``kind[c]``: value ``c`` is `OTHER`, a `NUMBER` or `UNCOMPARABLE`. When ``exact``,
    every number is ``num / denom`` with an integer ``num = high[c] * 2**LIMB_BITS + low[c]``
    (``0 <= low[c] < 2**LIMB_BITS``) such that the limbs of a sum of ``max_seq_len``
    numbers fit in int64: a kernel sums both limbs exactly, and
    ``sum / (count * denom)`` (`exact_means`, Python's correctly rounded int division)
    is the float `rasplang.evaluator.mean` returns, whatever the values. Every float is
    a dyadic rational, so thirds, means of means and 0.1 have such a form.

    When also ``fast``, ``num[c]`` (one int64) and ``count * denom`` stay below 2**53 for
    ``max_seq_len`` numbers, so ``float(sum) / float(count * denom)`` is one correctly
    rounded division in the kernel. Without ``exact`` (infinities, NaN, a range of
    magnitudes too wide for two limbs) kernels mark means `REEVALUATE`.
    """

    kind: np.ndarray  # [n] uint8
    high: np.ndarray  # [n] int64
    low: np.ndarray  # [n] int64
    num: np.ndarray  # [n] int64 (``fast`` only, else zeros)
    denom: int
    exact: bool
    fast: bool

    @property
    def kernel_denom(self) -> int:
        """``denom`` as the kernels' int64 argument (1 unless ``fast``; it may be huge)."""
        return self.denom if self.fast else 1


def numeric_info(table: Table, max_seq_len: int) -> NumericInfo:
    """Build the `NumericInfo` of a table for sums of up to ``max_seq_len`` values."""
    n = len(table)
    kind = np.zeros(n, dtype=np.uint8)  # OTHER
    fractions: list[tuple[int, Fraction]] = []
    exact = True
    for code, value in enumerate(table.values):
        if not is_number(value):
            if identity_dependent(value):
                kind[code] = UNCOMPARABLE
            continue
        kind[code] = NUMBER
        try:
            fractions.append((code, Fraction(value)))
        except (TypeError, ValueError, OverflowError):  # inf, nan
            exact = False
    denom = math.lcm(1, *(frac.denominator for _, frac in fractions)) if exact else 1
    scaled = [(code, frac.numerator * (denom // frac.denominator)) for code, frac in fractions]
    high = np.zeros(n, dtype=np.int64)
    low = np.zeros(n, dtype=np.int64)
    num = np.zeros(n, dtype=np.int64)
    if exact and scaled:
        top = max(abs(s) for _, s in scaled)
        exact = ((top >> LIMB_BITS) + 1) * max_seq_len <= _INT64_MAX \
            and _LIMB * max_seq_len <= _INT64_MAX
    fast = exact and denom * max_seq_len <= _EXACT \
        and all(abs(s) * max_seq_len <= _EXACT for _, s in scaled)
    if exact:
        for code, s in scaled:
            high[code] = s >> LIMB_BITS
            low[code] = s & (_LIMB - 1)
            if fast:
                num[code] = s
    else:
        denom = 1
    return NumericInfo(kind=kind, high=high, low=low, num=num, denom=denom, exact=exact,
                       fast=fast)


def exact_means(acc: np.ndarray, info: NumericInfo) -> np.ndarray:
    """The correctly rounded means of kernel sums ``acc [m, 3]`` (count, high, low limbs
    of the scaled sum; see `NumericInfo`), as float64 ``[m]``.

    With ``info.fast`` the sum and ``count * denom`` are exact float64s and one division
    rounds correctly; otherwise each distinct row is divided with Python ints.
    """
    acc = np.asarray(acc, dtype=np.int64).reshape(-1, 3)
    if info.fast:
        total = acc[:, 1] * _LIMB + acc[:, 2]
        return total.astype(np.float64) / (acc[:, 0] * info.denom).astype(np.float64)
    rows, inverse = np.unique(acc, axis=0, return_inverse=True)
    means = np.array([((high << LIMB_BITS) + low) / (count * info.denom)
                      for count, high, low in rows.tolist()], dtype=np.float64)
    return means[inverse.reshape(-1)]
