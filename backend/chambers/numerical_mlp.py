"""MLPs on numerical inputs: ReLU discretisation over the exact value set, and affine maps.

Discretisation. The analysis gives the exact sorted value set ``x_0 < ... < x_{n-1}``
of the input. Only where ``f`` changes, between ``x_{i-1}`` and ``x_i``, is a step
needed: with the midpoint ``b_i``, the local gap ``g_i = x_i - x_{i-1}`` and the slope
``L_i = mlp_exactness / g_i``, the two units

    s_i(x) = relu(L_i (x - b_i) + 1/2) - relu(L_i (x - b_i) - 1/2)

give exactly 0 for ``x <= b_i - 1/(2 L_i)`` and exactly 1 for ``x >= b_i + 1/(2 L_i)``.
The output is ``enc(f(x_0)) + sum_i s_i(x) (enc(f(x_i)) - enc(f(x_{i-1})))``, which
telescopes to ``enc(f(x_j))`` at ``x = x_j``. Margin: an input within
``g_i / 2 * (1 - 1/mlp_exactness)`` of ``x_j`` (in particular any leakage the compiler
allows, which it checks) still gives every step exactly 0 or 1, so the output carries
no error at all: discretisation resets accumulated error. Units: 2 per change of
``f`` plus one for the base value (tracr: 2 per value, with one slope for all gaps).

Affine. When ``f(x) = a x + c`` on every value of the set (checked to 1e-12
relative), or for a LinearSequenceMap, the output is ``sum_j a_j x_j + c`` with units
``relu(x_j)`` and ``relu(-x_j)`` (one of them dropped when the sign of ``x_j`` is fixed)
and ``relu(one)`` for ``c``: exact, and the error is ``sum_j |a_j| e_j``.

None. Where an input is None (a nullable numerical input: its flag is 1 and its value
coordinate 0), every unit above is switched off by ``none_flags.gate``: for the
discretising MLP the bound is the unit's pre-activation at coordinate 0 plus the
input's error times the slope; for the affine MLP the largest ``|value_j|`` any input
can hold (``max(|min_j|, |max_j|)``, and 1 for the constant unit). Then
``none_flags.none_units`` write ``enc(None)``: the output is None exactly where an input
is, with value coordinate 0, as `evaluate` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rasplang.backend.chambers.gated_mlp import gated_mlp
from rasplang.backend.chambers.none_flags import gate, with_none_units
from rasplang.backend.craft.bases import BasisDirection
from rasplang.backend.craft.blocks import MLP
from rasplang.backend.spaces import ONE, BosState, SOpSpace


def changes(f_values: Sequence[Any]) -> np.ndarray:
    """Indices ``i >= 1`` where ``f_values[i] != f_values[i - 1]`` (as the analysis's sets
    compare values: with ``==``)."""
    ys = np.empty(len(f_values), dtype=object)
    ys[:] = list(f_values)
    return np.flatnonzero(ys[1:] != ys[:-1]) + 1


#: Float rounding a numerical coordinate may carry, relative to the largest magnitude of
#: its values (at least 1): about 10^5 float64 ulps, far more than the few operations
#: of each layer accumulate, and far less than the gaps of value sets built from
#: ordinary arithmetic. Values closer than this (e.g. ``0.6`` and ``0.6000000000000001``
#: from two ways of rounding one sum) cannot be told apart by a threshold.
ROUNDING = 2.0 ** -36
#: The same allowance for a model run in float32 (16 float32 ulps of the largest value).
ROUNDING32 = 2.0 ** -20


def step_units(f_values: Sequence[Any]) -> int:
    """The hidden units `discretising_mlp` uses: two per change of ``f``, one base unit."""
    return 2 * len(changes(f_values)) + 1


def closest_step(xs: Sequence[float], f_values: Sequence[Any]) -> tuple[float, float] | None:
    """The two adjacent inputs closest together between which ``f`` changes (None: f is
    constant, so no step is needed)."""
    idx = changes(f_values)
    if not len(idx):
        return None
    xa = np.asarray(xs, dtype=float)
    i = int(idx[np.argmin(xa[idx] - xa[idx - 1])])
    return float(xa[i - 1]), float(xa[i])


def discretisation_problem(xs: Sequence[float], f_values: Sequence[Any], error: float,
                           mlp_exactness: float, rounding: float = ROUNDING) -> str | None:
    """Why the discretising MLP may not be exact for inputs off by up to ``error`` plus
    float rounding (``rounding`` relative to the largest value: `ROUNDING` for float64,
    `ROUNDING32` for float32); None when every step is exactly 0 or 1.

    A step between ``x_{i-1}`` and ``x_i`` absorbs an input error below
    ``g_i / 2 * (1 - 1/mlp_exactness)`` (the module docstring); the check keeps the
    error below half of that for the closest step.
    """
    step = closest_step(xs, f_values)
    if step is None:
        return None
    lo, hi = step
    tolerance = (hi - lo) / 2 * (1 - 1 / mlp_exactness)
    rounding *= max(1.0, float(np.abs(np.asarray(xs, dtype=float)).max()))
    if error + rounding < tolerance / 2:
        return None
    return (f"values {lo!r} and {hi!r} are {hi - lo:.3g} apart, but the input may be off by "
            f"{error:.3g} (attention leakage) plus {rounding:.3g} (float rounding); "
            "cannot discretise it exactly")


#: The slope factor the compiler gives a discretisation whose margin allows it (in place
#: of ``mlp_exactness``): steps of ``4 / g_i`` keep every pre-activation 25 times
#: smaller than ``100 / g_i``, and with it float32's rounding of the steps.
GENTLE_SLOPE = 4.0
#: Largest float32 error one step ``relu(p + 1/2) - relu(p - 1/2)`` may carry. Where
#: ``|p|`` is large both units are active, and their difference keeps float32's
#: rounding of ``p``, about ``2^-23 |p|``; readers sum such errors over a table's rows.
FLOAT32_STEP_ERROR = 2.0 ** -7


def float32_step_problem(xs: Sequence[float], f_values: Sequence[Any], error: float,
                         mlp_exactness: float, gates: int = 0) -> str | None:
    """Why float32 may round the steps' pre-activations by more than
    `FLOAT32_STEP_ERROR` (None: it does not), from the steepest step. Each of ``gates``
    (a gated discretisation's ``B (e_c - 1)``, ``B`` at most the slope times the
    input's range plus its error, plus 2) adds two terms of that size."""
    step = closest_step(xs, f_values)
    if step is None:
        return None
    xa = np.abs(np.asarray(xs, dtype=float))
    slope = mlp_exactness / (step[1] - step[0])
    # each unit's p = L x - L b rounds by 2^-24 (L |x| + L |b|) <= 2^-23 L max|x|; two units
    gate = slope * (float(np.ptp(xs)) + error) + 2.0
    rounded = 2.0 ** -22 * (slope * (float(xa.max()) + error) + gates * gate)
    if rounded <= FLOAT32_STEP_ERROR:
        return None
    return (f"steps of slope {slope:.3g} on values up to {float(xa.max()):.3g} are rounded "
            f"by up to {rounded:.2g}")


def step_rounding(xs: Sequence[float], tables: Sequence[Sequence[Any]], error: float,
                  mlp_exactness: float, gates: int = 0) -> float:
    """A bound on the float64 rounding in a discretising MLP's output, which its margin
    does not remove: an active step ``relu(p + 1/2) - relu(p - 1/2)`` is 1 only up to
    ``2^-52 (|p| + 1)``, with ``|p|`` at most that step's slope (``mlp_exactness`` over
    its gap) times ``2 max|x| + error`` (each gate of a gated discretisation, sized from
    the same slope, adds as much again and 2), and its jump multiplies that. Summed over
    the steps of the worst of ``tables``."""
    xa = np.asarray(xs, dtype=float)
    span = 2 * float(np.abs(xa).max(initial=0.0)) + error
    worst = 0.0
    for ys in tables:
        total = 0.0
        for i in changes(ys).tolist():
            reach = mlp_exactness / float(xa[i] - xa[i - 1]) * span
            total += (reach * (1 + gates) + 2 * gates + 1) * _jump(ys[i - 1], ys[i])
        worst = max(worst, 2.0 ** -52 * total)
    return worst


def _jump(a: Any, b: Any) -> float:
    """How far one step moves an output coordinate (1 for a one-hot or a None flag)."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return max(1.0, abs(float(b) - float(a))) if numbers else 1.0


def discretising_mlp(
    label: str, inp: SOpSpace, xs: Sequence[float], f: Callable[[Any], Any], out: SOpSpace,
    mlp_exactness: float, bos: BosState,
) -> MLP:
    """Map a numerical input with sorted value set ``xs`` through ``f``."""
    xs = np.asarray(xs, dtype=float)
    ys = [f(x) for x in xs.tolist()] if callable(f) else list(f)
    steps = changes(ys).tolist()
    n_units = step_units(ys)
    w_in = np.zeros((2, n_units))  # rows: the input coordinate, one
    w_out = np.zeros((n_units, len(out.directions)))
    w_in[1, 0] = 1.0  # base unit relu(one) = 1
    if ys:  # else the input is always None: the None units below write the output
        w_out[0] = out.encode(ys[0])
    for k, i in enumerate(steps):
        slope = mlp_exactness / (xs[i] - xs[i - 1])
        mid = (xs[i] + xs[i - 1]) / 2
        delta = out.encode(ys[i]) - out.encode(ys[i - 1])
        for u, shift, sign in ((1 + 2 * k, 0.5, 1.0), (2 + 2 * k, -0.5, -1.0)):
            w_in[0, u] = slope * inp.scale
            w_in[1, u] = shift - slope * mid
            w_out[u] = sign * delta
    in_dirs = [inp.directions[0], ONE]
    if inp.nullable:  # off where the input is None (coordinate 0 +- its error)
        bound = w_in[1] + np.abs(w_in[0]) * (inp.error + 1e-12)
        in_dirs, w_in = gate(in_dirs, w_in, [inp], bound)
        in_dirs, w_in, w_out = with_none_units(in_dirs, w_in, w_out, [inp], out)
    return gated_mlp(label, in_dirs, w_in, out.directions, w_out, bos)


def affine_fit(xs: Sequence[float], ys: Sequence[Any]) -> tuple[float, float] | None:
    """``(a, c)`` with ``ys == a * xs + c`` to 1e-12 relative, else None."""
    if any(y is None or isinstance(y, bool) or not isinstance(y, (int, float)) for y in ys):
        return None
    xa, ya = np.asarray(xs, float), np.asarray(ys, float)
    if len(xa) == 0:  # the input is always None
        return 0.0, 0.0
    if len(xa) == 1:
        return 0.0, float(ya[0])
    a = (ya[-1] - ya[0]) / (xa[-1] - xa[0])
    c = ya[0] - a * xa[0]
    scale = max(1.0, float(np.abs(ya).max()), float(np.abs(xa).max() * abs(a)))
    if np.all(np.abs(a * xa + c - ya) <= 1e-12 * scale):
        return float(a), float(c)
    return None


def affine_mlp(
    label: str, terms: Sequence[tuple[SOpSpace, float, tuple[float, float]]], const: float,
    out: SOpSpace, bos: BosState,
) -> MLP:
    """``sum_j a_j value_j + const`` for terms ``(space, a_j, (min_j, max_j))``.

    A categorical term is read linearly as ``sum_v v e_v`` (its values must be numbers).
    """
    units: list[tuple[tuple[BasisDirection, ...], np.ndarray, float]] = []
    bound: list[float] = []  # of each unit's pre-activation where an input is None
    for space, a, (lo, hi) in terms:
        if a == 0:
            continue
        readout = space.readout()
        for sign, needed in ((1.0, hi > 0), (-1.0, lo < 0)):
            if needed:  # relu(sign * value) contributes sign * a * relu(sign * value)
                units.append((space.directions, sign * readout, sign * a))
                bound.append(max(abs(lo), abs(hi)) * (1 + space.error) + space.error)
    all_dirs = [*dict.fromkeys(d for dirs, _, _ in units for d in dirs), ONE]
    index = {d: i for i, d in enumerate(all_dirs)}
    n_units = len(units) + (1 if const != 0 else 0)
    w_in = np.zeros((len(all_dirs), n_units))
    w_out = np.zeros((n_units, 1))
    for u, (dirs, col, a) in enumerate(units):
        for d, c in zip(dirs, col):
            w_in[index[d], u] += c
        w_out[u, 0] = a / out.scale
    if const != 0:
        w_in[index[ONE], -1] = 1.0
        w_out[-1, 0] = const / out.scale
        bound.append(1.0)
    w_out = np.hstack([w_out, np.zeros((n_units, len(out.directions) - 1))])
    spaces = [space for space, _, _ in terms]
    in_dirs, w_in = gate(all_dirs, w_in, spaces, np.asarray(bound))
    in_dirs, w_in, w_out = with_none_units(in_dirs, w_in, w_out, spaces, out)
    return gated_mlp(label, in_dirs, w_in, out.directions, w_out, bos)
