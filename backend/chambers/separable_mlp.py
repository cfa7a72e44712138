"""SequenceMaps that are sums: ``f(x, y) = u(x) + v(y)`` read linearly, then discretised.

Separability. ``f`` is separable on the value sets ``X`` and ``Y`` of its (categorical)
inputs when every output is a number of one type (all ``int`` or all ``float``; never
``bool``, None or a mix, so that equal numbers are identical outputs) and, in exact
rational arithmetic (``fractions.Fraction``, which holds every int and float exactly),

    f(x, y) - f(x, y_0) - f(x_0, y) + f(x_0, y_0) == 0   for every x in X, y in Y.

Then ``u(x) = f(x, y_0)`` and ``v(y) = f(x_0, y) - f(x_0, y_0)`` give
``u(x) + v(y) = f(x, y)`` exactly. `split` checks this on every pair (``|X| |Y|`` calls of
``f``, as the lookup table needs anyway) and returns None otherwise.

Linear read. At a real position the inputs are one-hots ``e_x`` and ``e_y``, so
``S = sum_a u(a) e_a + sum_b v(b) e_b`` equals ``u(x) + v(y) = f(x, y)``: a sum of two
table entries, exact in rational arithmetic.

Categorical output. Let ``s_0 < ... < s_{k-1}`` be the distinct values of ``f`` and
``y_i`` the output with value ``s_i`` (one output per value, since all have one type).
As in ``numerical_mlp``'s discretisation, with the gap ``g_i = s_i - s_{i-1}``, the
midpoint ``m_i`` and the slope ``L_i = M / g_i`` (``M = mlp_exactness``), the two units
``relu(L_i (S - m_i) + 1/2) - relu(L_i (S - m_i) - 1/2)`` are exactly 0 for
``S <= s_{i-1}`` and exactly 1 for ``S >= s_i``, and they write
``enc(y_i) - enc(y_{i-1})``; a base unit ``relu(one) = 1`` writes ``enc(y_0)``. The sum
telescopes to ``enc(f(x, y))``. Units: ``2 (k - 1) + 1``, about two per distinct output
(the lookup table needs about one per input pair: 4,096 for ``length - indices`` at
``max_seq_len`` 64, where this needs 253).

Margin. Each step is exactly 0 or 1 as long as ``L_i (S - m_i)`` is off by less than
``(M - 1) / 2``, i.e. ``S`` by less than ``g_i (M - 1) / (2M)``. Let
``A = max|u| + max|v| + max|s|``; every pre-activation is at most ``L_i A + 1/2`` in
magnitude (the gate bound below). Two things move ``S``:

- input error: coordinates off by ``e`` (softmax leakage the compiler bounds, plus
  ``2^-20`` for float32 rounding in earlier layers) move it by at most
  ``E = sum_a |u(a)| e_x + sum_b |v(b)| e_y``;
- float rounding of this layer. A unit reads ``t = |X| + |Y| + 2`` rows (the one-hots,
  ``one``, BOS). At a real position the products ``x_j w_j`` that are not tiny are
  ``L_i u(x)``, ``L_i v(y)``, the bias and at most four None-gate weights of
  ``L_i A + 2``, so ``sum_j |x_j w_j| <= 5 L_i A + 9``; a float dot product with rounded
  weights is off by at most ``(t + 1) eps`` times that (``eps = 2^-24`` in float32), so
  ``S`` by at most ``(t + 1) eps (5 A + 9 g_i / M)``.

`margin_problem` refuses (the compiler then keeps the lookup table) unless both bounds
are below ``g (M - 1) / (4M)``, ``g`` the smallest gap: each uses at most half the
margin, in float32 and so in float64. The output then carries no error at all: like
every discretisation, this resets accumulated error.

Numerical output. No steps: the units ``relu(S)`` and ``relu(-S)`` write ``+-S`` (one is
dropped when the sign of ``f`` is fixed), exact up to rounding; error ``E``.

None. A None input (the zero vector, its indicator 1) switches every unit off through
``none_flags.gate`` (the bound: ``L_i A + 1`` for a step, ``A`` for the linear units),
and ``none_flags.none_units`` write ``enc(None)``; so the output is None exactly where
an input is, as `evaluate` gives (it does not call ``f`` then). BOS: ``gated_mlp``.

The builder (``build.py``) uses this MLP when ``f`` splits, the margin holds and it has
no more units than the lookup table (``categorical_mlp``); otherwise the table.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

from rasplang.backend.chambers.gated_mlp import gated_mlp
from rasplang.backend.chambers.none_flags import gate, with_none_units
from rasplang.backend.chambers.numerical_mlp import FLOAT32_STEP_ERROR
from rasplang.backend.craft.blocks import MLP
from rasplang.backend.spaces import ONE, BosState, SOpSpace

#: Float32 unit roundoff: the margin check holds for float32 and hence float64.
EPS32 = 2.0 ** -24


@attrs.frozen
class Split:
    """``f(x_i, y_j) == u[i] + v[j]`` exactly; ``outputs`` maps each value to its output."""

    u: tuple[Fraction, ...]
    v: tuple[Fraction, ...]
    outputs: dict[Fraction, Any]


def split(xs: tuple[Any, ...], ys: tuple[Any, ...], f: Callable[[Any, Any], Any]) -> Split | None:
    """``f`` as ``u(x) + v(y)`` on ``xs`` x ``ys`` (exactly), or None if it is not."""
    if not xs or not ys:
        return None
    kind: type | None = None
    table: list[list[Fraction]] = []
    outputs: dict[Fraction, Any] = {}
    for x in xs:
        row = []
        for y in ys:
            out = f(x, y)
            if type(out) not in (int, float) or (kind is not None and type(out) is not kind):
                return None
            kind = type(out)
            try:
                value = Fraction(out)
            except (ValueError, OverflowError):  # nan, inf
                return None
            outputs.setdefault(value, out)
            row.append(value)
        table.append(row)
    first, corner = table[0], table[0][0]
    u = tuple(row[0] for row in table)
    if any(row[j] - row[0] - first[j] + corner for row in table for j in range(len(ys))):
        return None
    return Split(u, tuple(value - corner for value in first), outputs)


def _bound(s: Split) -> Fraction:
    """``A = max|u| + max|v| + max|s|``: a pre-activation is at most ``L_i A + 1/2``."""
    return max(map(abs, s.u)) + max(map(abs, s.v)) + max(map(abs, s.outputs))


#: Float32 rounding in earlier layers, counted as input error.
ROUNDING32 = Fraction(1, 2 ** 20)


def margin_problem(s: Split, fst: SOpSpace, snd: SOpSpace, mlp_exactness: float,
                   categorical: bool) -> str | None:
    """Why the discretisation of ``s`` may not be exact (see the module docstring)."""
    if not categorical:
        return None
    values = sorted(s.outputs)
    if len(values) < 2:
        return None
    if _bound(s) > 2**53:
        return "its terms exceed 2**53 in magnitude, past exact float arithmetic"
    m = Fraction(mlp_exactness)
    gaps = [b - a for a, b in itertools.pairwise(values)]
    room = min(gaps) * (m - 1) / (4 * m)
    err = (sum(map(abs, s.u)) * (Fraction(max(fst.error, fst.error32)) + ROUNDING32)
           + sum(map(abs, s.v)) * (Fraction(max(snd.error, snd.error32)) + ROUNDING32))
    if err >= room:
        return f"inputs may be off by {float(err):.3g}, values are {float(min(gaps)):.3g} apart"
    terms = len(fst.directions) + len(snd.directions) + 2
    if (terms + 1) * Fraction(EPS32) * (5 * _bound(s) + 9 * max(gaps) / m) >= room:
        return f"values {float(min(gaps)):.3g} apart are too close for float32 at this range"
    # A saturated step relu(p + 1/2) - relu(p - 1/2) keeps float32's rounding of |p|, up
    # to the steepest slope times A: past FLOAT32_STEP_ERROR the output is no one-hot.
    saturated = 2.0 ** -22 * float(m / min(gaps) * _bound(s) + 1)
    if saturated > FLOAT32_STEP_ERROR:
        return (f"steps of slope {float(m / min(gaps)):.3g} on sums up to "
                f"{float(_bound(s)):.3g} are rounded by up to {saturated:.2g} in float32")
    return None


def output_error(s: Split, fst: SOpSpace, snd: SOpSpace) -> float:
    """``E``: the output error of the numerical (linear) form."""
    return float(sum(map(abs, s.u)) * Fraction(fst.error)
                 + sum(map(abs, s.v)) * Fraction(snd.error))


def separable_mlp(
    label: str, fst: SOpSpace, snd: SOpSpace, s: Split, out: SOpSpace, mlp_exactness: float,
    bos: BosState,
) -> MLP:
    """``f = u + v`` on two categorical inputs (different SOps), to ``out``."""
    in_dirs = [*fst.directions, *snd.directions, ONE]
    read = np.array([*s.u, *s.v, 0], dtype=object)  # S as a row vector over in_dirs
    big = _bound(s)
    if out.numerical:
        signs = [sign for sign, needed in ((1, max(s.outputs) > 0), (-1, min(s.outputs) < 0))
                 if needed]
        w_in = np.zeros((len(in_dirs), len(signs)))
        for k, sign in enumerate(signs):
            w_in[:, k] = [float(sign * r) for r in read]
        w_out = np.zeros((len(signs), len(out.directions)))
        w_out[:, 0] = [sign / out.scale for sign in signs]
        bound = np.full(len(signs), float(big + 1))
    else:
        values = sorted(s.outputs)
        m = Fraction(mlp_exactness)
        n_units = 2 * len(values) - 1
        w_in = np.zeros((len(in_dirs), n_units))
        w_out = np.zeros((n_units, len(out.directions)))
        bound = np.ones(n_units)
        w_in[-1, 0] = 1.0  # base unit relu(one) = 1 writes enc(y_0)
        w_out[0] = out.encode(s.outputs[values[0]])
        for i in range(1, len(values)):
            lo, hi = values[i - 1], values[i]
            slope, mid = m / (hi - lo), (lo + hi) / 2
            delta = out.encode(s.outputs[hi]) - out.encode(s.outputs[lo])
            for u, shift, sign in ((2 * i - 1, Fraction(1, 2), 1.0), (2 * i, Fraction(-1, 2),
                                                                      -1.0)):
                column = read * slope
                column[-1] = shift - slope * mid
                w_in[:, u] = [float(c) for c in column]
                w_out[u] = sign * delta
                bound[u] = float(slope * big + 1)
    in_dirs, w_in = gate(in_dirs, w_in, [fst, snd], bound)
    in_dirs, w_in, w_out = with_none_units(in_dirs, w_in, w_out, [fst, snd], out)
    return gated_mlp(label, in_dirs, w_in, out.directions, w_out, bos)
