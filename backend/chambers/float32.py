"""What float32 does to each construction: worst-case error bounds per residual direction.

The build pass keeps, for every residual direction ``d``, a bound ``e_d`` on how far its
coordinate may be from the exact value at a real position when the model runs in
float32 (rounding included, of every earlier layer), and a bound ``M_d`` on its
magnitude (1 for one-hots, flags and ``one``; ``max|v| / scale`` for a numerical value;
0 for the BOS direction, which is 0 at every real position). ``u = 2^-24`` is float32's
unit roundoff. The bounds hold for any summation order (a dot product of ``t`` nonzero
terms is off by at most ``(t + 1) u`` times the sum of their magnitudes, Higham's
``gamma_t``), except a discretisation's output sum, bounded step by step; so the dense
forward, the structured one and every batch size meet them.

MLP (`mlp_error32`). A hidden unit ``h = relu(p)``, ``p = sum_j W_jh x_j``. Each rounding
of its dot product (a weight float32 does not hold, a product other than by a power of
two or of integers, each addition of a nonzero term) is at most ``u P_h``,
``P_h = sum_j |W_jh| (M_j + e_j)``, so ``p`` is off by at most ``r_h = k_h u P_h`` from the
exact pre-activation of the rounded inputs, ``k_h`` the count of those roundings;
``relu`` is 1-Lipschitz. Input errors move ``p`` by at most ``q_h = sum_j |W_jh| e_j``.
Two kinds of MLP:

- *linear* (lookups, affine maps, products, the linear form of a separable map): every
  unit passes its input's error on, so an output coordinate ``c`` is off by at most
  ``sum_h |V_hc| (q_h + r_h)`` plus the roundings of its own sum, counted the same
  way, and the residual's addition, each ``u sum_h |V_hc| (P_h + q_h)``. In a lookup a
  unit whose bias is at most -1 (and whose inputs move it by less than 1) stays off
  unless it reads a hot coordinate, so per one-hot only the units of one coordinate
  count (`_live_sum`);
- *saturating* (discretisations, whose margin the build checks against the input's
  float32 bound): each step is exactly 0 or 1 in exact arithmetic whatever the input's
  error, so only rounding remains: ``r_h`` with ``P_h`` the range of ``p`` over the
  inputs' ranges (the two units of a step read the same rounded product), and the
  output sum's rounding, taken per step (a step's two units cancel to 0 or 1 before
  the next step's terms: the units are adjacent columns).

A lookup over exact one-hots (embeddings, or lookups of them) has integer weights and
small integer pre-activations, all exact in float32: its bound is 0. A discretisation's
saturated steps keep both units active with ``|p|`` up to the slope times the input's
range, so it leaves rounding residue in its one-hot that a reader sums (hence the
propagation: a one-hot read as a number or by a lookup carries it on).

Attention (`mean_error32`). The coldness is a power of two and the logits are integer
or half-integer multiples of it (``attention.py``), times the assembly's power-of-two
factor for ``sqrt(d_head)``, so where the query and key one-hots are exact every logit
of the head is an exact float32 number and equal logits stay equal: the selected keys
get ``exp(0) = 1`` each and the very same weight ``fl(1 / S)``. Then the mean of the ``w``
selected values of magnitude at most ``V`` is off by the softmax's leakage plus
``((w + 1) / 2 + 8) u V``: the weight's rounding, the value and output projections and
the residual's addition (8 ``u V`` in all), and the sum of the ``k <= S`` selected
products, each at most ``T = V / S``. A sum in any order is a binary tree of additions.
One that joins two subtrees holding selected terms is off by at most ``u`` times its
result, at most ``T`` times the selected terms under it: these roundings add up to at
most ``u T`` times the sum of the selected terms' depths in the tree of those joins, at
most ``k (k + 1) / 2`` (a chain), so ``u V (S + 1) / 2``. One that adds a subtree ``t``
of keys that are not selected moves the sum by at most ``|t|`` (the sum itself is a
float ``|t|`` away), so those keys add at most their leaked weight, ``V leak``. Where
the inputs carry an error, the logits move by ``eta`` (their error times the effective
coldness, at most twice the chosen one, plus the logits' own rounding) and equal logits
may differ by ``2 eta``: the selected weights are then off by ``expm1(2 eta)``
relative, and the leakage grows by ``exp(2 eta)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from rasplang.backend.craft.bases import BasisDirection
from rasplang.backend.craft.blocks import MLP

#: float32's unit roundoff.
EPS32 = 2.0 ** -24
#: The largest ratio of a head's effective coldness to the one the build chose: the
#: assembly scales ``W_Q`` by the power of two at or above ``sqrt(d_head)``, which the
#: forward pass divides out exactly, so the coldness is ``C`` to ``2 C``.
COLDNESS_FACTOR = 2.0


def grid(values: np.ndarray) -> np.ndarray:
    """Per entry, the exponent ``q`` of the coarsest power of two of which the entry is
    an integer multiple (``+inf`` for 0, ``-inf`` for inf and nan): ``0.75`` is ``3 *
    2^-2``, so -2. A float32 sum of terms that are multiples of ``2^q`` is exact while
    the sum of their magnitudes stays below ``2^(24 + q)``: every partial sum is such a
    multiple, and float32 holds it."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    mant, exp = np.frexp(np.where(finite, v, 0.0))
    n = np.abs(mant * 2.0 ** 53).astype(np.int64)  # the 53-bit mantissa, exactly
    nonzero = n != 0
    low = np.where(nonzero, n & -n, 1)  # its lowest set bit
    q = exp - 53.0 + np.log2(low.astype(np.float64))  # exact: log2 of a power of two
    return np.where(nonzero, q, np.where(finite, np.inf, -np.inf))


def exact_below(total: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Whether a float32 sum of multiples of ``2^q`` whose magnitudes sum to ``total`` is
    exact (`grid`)."""
    with np.errstate(over="ignore"):
        return np.isfinite(q) & (total < np.exp2(np.minimum(24.0 + q, 127.0))) | (total == 0)


def _one_hots(rows: Sequence[BasisDirection], m: np.ndarray, e: np.ndarray
              ) -> list[list[int]]:
    """The rows of each one-hot (several directions of one name, each a 0 or 1 off by
    less than 1/4): at most one of them is near 1, the others are within their error of
    0 (exactly 0 where the error is 0)."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(rows):
        groups.setdefault(d.name, []).append(i)
    return [idx for idx in groups.values()
            if len(idx) > 1 and (m[idx] <= 1.25).all() and (e[idx] < 0.25).all()]


def _grouped(terms: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """Per column, the sum of ``terms [rows, hidden]`` over rows, each one-hot counted
    by its largest term only (the hot row; `_cold` adds the others' errors)."""
    total = terms.sum(axis=0)
    for idx in groups:
        total += terms[idx].max(axis=0) - terms[idx].sum(axis=0)
    return total


def _cold(errors: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """Per column, what the cold rows of the one-hots may add: their errors (``errors
    [rows, hidden]``, ``|W| e``) summed over each one-hot."""
    total = np.zeros(errors.shape[1])
    for idx in groups:
        total += errors[idx].sum(axis=0)
    return total


def _roundings(w: np.ndarray, exact_product: np.ndarray,
               groups: list[list[int]] = ()) -> np.ndarray:
    """Per column of ``w``, how many roundings its dot product may make: a weight float32
    does not hold, a product other than by a power of two or one ``exact_product`` says
    is exact, and each addition of a nonzero term; each is at most ``u`` times the sum
    of the terms' magnitudes."""
    nonzero = w != 0
    held = w.astype(np.float32) == w
    mantissa, _ = np.frexp(np.abs(w))
    exact_product = exact_product | (mantissa == 0.5)
    # a one-hot's cold rows are exact zeros or tiny terms `_cold` bounds: count its hot one
    return (_grouped((nonzero & ~held).astype(float), list(groups))
            + _grouped((nonzero & ~exact_product).astype(float), list(groups))
            + np.maximum(_grouped(nonzero.astype(float), list(groups)) - 1, 0))


def _live_sum(mlp: MLP, cost: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """Per output column, the largest sum of ``cost [hidden, out]`` over the units that
    may be on at one input of a lookup. A unit whose bias (its ``one`` row) is at most
    -1 and whose inputs move it by less than 1 stays off unless it reads a hot
    coordinate; each one-hot (the directions of one name) has at most one hot
    coordinate. So a column costs the units that may be on anyway, plus, per one-hot,
    the most any one of its coordinates switches on."""
    w_in = mlp.first.matrix
    rows = mlp.first.input_space.basis
    bias = np.zeros(w_in.shape[1])
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(rows):
        if d.name == "one":
            bias += w_in[i]
        else:
            groups.setdefault(d.name, []).append(i)
    margined = (bias <= -1.0) & (moved < 1.0)
    total = cost[~margined].sum(axis=0)
    for idx in groups.values():
        reads = w_in[idx] > 0                    # [group rows, hidden]: can switch on
        per_row = (reads[:, margined].astype(float) @ cost[margined])  # [rows, out]
        total = total + per_row.max(axis=0, initial=0.0)
    return total


def mlp_error32(mlp: MLP, err: Mapping[BasisDirection, float],
                mag: Mapping[BasisDirection, float], saturating: bool,
                grids: Mapping[BasisDirection, float] | None = None, one_hot: bool = False,
                span: Mapping[BasisDirection, tuple[float, float]] | None = None,
                cold: Mapping[BasisDirection, float] | None = None, eps: float = EPS32,
                ) -> dict[BasisDirection, float]:
    """Each output direction's float32 error bound (module docstring), from the input
    directions' errors ``err`` and magnitudes ``mag`` (missing: 0 and 1). ``cold``: for
    some directions of one-hots, a smaller bound that holds where the coordinate is not
    the hot one (a mean of one-hots: there only leaked weight reaches it); of a one-hot's
    rows one is hot, and the others count with that bound.

    Exact arithmetic is not charged. ``grids`` gives the directions whose coordinates
    are exact (error 0) with the `grid` of their values (exact one-hots, ``one`` and
    BOS: 0; a number of halves: -1). A unit whose weights float32 holds and whose rows
    are all exact computes its pre-activation exactly when the magnitudes of its terms,
    multiples of ``2^q`` for ``q`` the smallest grid of a weight times a row, sum to less
    than ``2^(24 + q)`` (`exact_below`); so does an output coordinate whose units are all
    exact, by the same rule on its weights, or, for a lookup whose units are indicators
    of which one at most is 1 (``one_hot``), where its weights are float32 numbers.
    ``eps``: the unit roundoff (0 propagates the input errors alone: the float64 bound
    of a lookup, `Margins.lookup_error`)."""
    w_in, w_out = mlp.first.matrix, mlp.second.matrix       # [in, hidden], [hidden, out]
    rows = mlp.first.input_space.basis
    e = np.array([err.get(d, 0.0) for d in rows])
    m = np.array([mag.get(d, 1.0) for d in rows])
    a_in = np.abs(w_in)
    grids = {} if grids is None else grids
    row_grid = np.array([grids.get(d, -np.inf) for d in rows], dtype=np.float64)
    groups = _one_hots(rows, m, e)
    # a one-hot's hot coordinate within 2^-25 of 1 is the float32 number 1 itself
    for idx in groups:
        if (e[idx] < 2.0 ** -25).all():
            row_grid[idx] = np.maximum(row_grid[idx], 0.0)
    binary_rows = (row_grid >= 0) & (m <= 1.0)  # exact one-hots, flags, ``one``, BOS
    held_in = w_in.astype(np.float32) == w_in
    with np.errstate(invalid="ignore"):  # +inf (a zero weight) plus -inf (inexact row)
        term_grid = np.where(w_in != 0, grid(w_in) + row_grid[:, None], np.inf)
    products = exact_below(a_in * m[:, None], term_grid) & held_in  # each w x exact
    ec = e.copy()  # the error of a one-hot's row where it is not the hot one
    for idx in groups:
        ec[idx] = np.minimum(e[idx], [(cold or {}).get(rows[i], np.inf) for i in idx])
    size = _grouped(a_in * (m + e)[:, None], groups) + _cold(a_in * ec[:, None], groups)  # P_h
    moved = np.zeros_like(size) if saturating else \
        a_in.T @ ec + _grouped(a_in * (e - ec)[:, None], groups)  # q_h
    if saturating and span is not None:  # the range of p, not the sizes of its terms
        lo = np.array([span.get(d, (-1.0, 1.0))[0] for d in rows]) - e
        hi = np.array([span.get(d, (-1.0, 1.0))[1] for d in rows]) + e
        lows = np.minimum(w_in * lo[:, None], w_in * hi[:, None])
        highs = np.maximum(w_in * lo[:, None], w_in * hi[:, None])
        low, high = lows.sum(axis=0), highs.sum(axis=0)
        for idx in groups:  # one row of a one-hot is hot, the others near 0
            near = (a_in[idx] * e[idx, None]).sum(axis=0)
            low += np.minimum(0.0, w_in[idx].min(axis=0)) - near - lows[idx].sum(axis=0)
            high += np.maximum(0.0, w_in[idx].max(axis=0)) + near - highs[idx].sum(axis=0)
        size = np.maximum(np.abs(low), np.abs(high))
    # adding a cold coordinate's term t moves the sum by at most |t|: counted once
    cold_terms = np.zeros_like(size) if saturating else _cold(a_in * ec[:, None], groups)
    rounded = _roundings(w_in, products | binary_rows[:, None], groups) * eps * size \
        + cold_terms  # r_h
    unit_grid = term_grid.min(axis=0, initial=np.inf)
    exact = ((a_in == 0) | held_in).all(axis=0) & exact_below(size, unit_grid)
    rounded[exact] = cold_terms[exact]  # exact sums, and the cold rows' tiny terms
    a_out = np.abs(w_out)
    hidden_exact = exact & (moved == 0)
    held_out = w_out.astype(np.float32) == w_out
    with np.errstate(invalid="ignore"):  # a unit's value is on its grid where it is exact
        out_grid = np.where(w_out != 0, grid(w_out) + np.where(exact, unit_grid,
                                                               -np.inf)[:, None], np.inf)
        out_products = exact_below(a_out * size[:, None], out_grid) & held_out \
            & hidden_exact[:, None]
    sums = _roundings(w_out, out_products) + 1                 # and the residual's addition
    if saturating:  # each step's two units cancel to 0 or 1 before the next step's
        total = a_out.T @ (rounded + 2 * eps * size) + 2 * eps * a_out.sum(axis=0)
    elif one_hot:
        cost = a_out * (moved + rounded)[:, None] \
            + a_out * (size + moved)[:, None] * (sums * eps)[None, :]
        total = _live_sum(mlp, cost, moved + rounded)
    else:
        total = a_out.T @ (moved + rounded) + sums * eps * (a_out.T @ (size + moved))
    fed = a_out > 0
    from_exact = (~fed | exact[:, None]).all(axis=0)
    with np.errstate(invalid="ignore"):  # 0 * inf where a unit feeds nothing
        reach = np.where(fed, a_out * size[:, None], 0.0).sum(axis=0)
    exact_sum = (~fed | held_out).all(axis=0) & exact_below(
        reach, out_grid.min(axis=0, initial=np.inf))
    if one_hot:
        exact_sum |= (~fed | held_out).all(axis=0)
    exact_out = from_exact & exact_sum
    total[exact_out] = (a_out.T @ (moved + rounded))[exact_out]
    return dict(zip(mlp.second.output_space.basis, total.tolist()))


def mean_error32(selected: int, vmax: float, leak: float, eta: float, tie: float,
                 rounding: bool = True) -> float:
    """The float32 error of a head's output coordinate beyond its value's own error:
    ``2 V (leak e^{2 eta} + expm1(2 tie)) + ((w + 1) / 2 + 8) u V e^{2 tie}
    + V leak e^{2 eta}`` (module docstring), ``w`` the most keys a query selects; ``tie``
    bounds how far equal logits may drift apart (0 where they stay equal; a weight is
    then at most ``e^{2 tie} / S``). Without ``rounding`` the rounding terms are left out
    (a sum of exact zeros)."""
    drift = math.expm1(min(2 * tie, 50.0))
    leaked = leak * math.exp(min(2 * eta, 50.0))
    return 2 * vmax * (leaked + drift) \
        + ((((selected + 1) / 2 + 8) * EPS32 * (1 + drift) + leaked) * vmax
           if rounding else 0.0)


def logit_rounding32(levels: float) -> float:
    """How far float32 may move a logit of at most ``levels`` (before the coldness) whose
    inputs carry an error: the query and key reads, the product and the division by the
    attention scale, each ``u`` relative, on magnitudes of at most ``levels + 1``."""
    return 8 * EPS32 * (levels + 1)
