"""Value tables: the integer code of every value a node can take.

The interpreter must return exactly the object `rasplang.evaluate` returns (``True``
stays a bool, a mean stays a float), so its tables are the analysis's *typed* value
tables (`rasplang.values.Table`, keyed by `rasplang.values.typed_key`), not the value
sets that ``==`` merges. A `Table` is immutable; `Table.with_values` returns a longer
copy when a run meets a value the plan did not know (e.g. the mean of a categorical
Aggregate whose selection holds several different numbers), so a plan can be shared by
concurrent runs.

This module adds what the Aggregate kernels need to know about a table (`NumericInfo`,
`exact_means`), reading which values compare by object identity from the one rule,
`rasplang.values.identity_dependent`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

from rasplang.evaluator import is_number
from rasplang.interpreter.codes import (  # noqa: F401  (MEAN, REEVALUATE: re-exported)
    LIMB_BITS,
    MEAN,
    NUMBER,
    OTHER,
    REEVALUATE,
    UNCOMPARABLE,
)
from rasplang.values import (  # noqa: F401  (re-exported)
    Table,
    identity_dependent,
    typed_key,
)

Value = Any

#: Largest integer a float64 holds exactly.
_EXACT = 2**53


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
