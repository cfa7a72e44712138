"""Attention heads: Aggregate (categorical and numerical) and SelectorWidth.

Logits. For a selector made of ``m`` terms (see ``selector.py``) the head's logit from
a query to a real key is ``C * sum_t T_t[a_t, b_t]``: ``C m`` if the key is selected and
at most ``C (m - 1)`` otherwise. The BOS key gets ``C (m - 1/2)`` for an Aggregate and
``C m`` for a SelectorWidth, whatever the query, via the ``one`` (query) x BOS (key)
entry; the key-side state of the SOps at the BOS position (an Aggregate holds its
default there) is known, and its contribution is subtracted in the BOS column, so the
BOS logit is exactly that level. A query at the BOS position attends to BOS with a
margin of at least ``C/2`` (an extra BOS x BOS entry, sized from the known BOS state),
so every SOp's value at BOS is known at compile time.

Aggregate, exactness. With ``w >= 1`` selected keys each gets weight
``1 / (w + e^{-C/2} + u e^{-C})``, BOS at most ``e^{-C/2}/w`` and the ``u`` others at most
``e^{-C}/w``: the output is the exact mean of the selected values up to a leakage
``delta <= (n + 1) e^{-C/2}`` of the total weight. With ``w = 0``, BOS gets weight at least
``1 - n e^{-C/2}``. The value of BOS is ``enc(default)``: the OV map sends the BOS
direction to ``enc(default) - OV(BOS state of the value SOp)``. So the error of any
output coordinate is at most ``2 V delta`` (``V`` the largest value magnitude, 1 for
one-hots), plus the value SOp's own error, plus ``4 V eta`` where ``eta`` bounds the
logit error caused by errors in the query and key SOps. The coldness ``C`` is chosen so
that ``2 V delta <= 1e-12`` (``C ~ 2 ln((n + 1) 2V / 1e-12)``, about 60 to 80), which is
far inside what discretising MLPs absorb and far below the 1e-6 the tests allow; in
float32 the leakage underflows relative to the selected weights.

None. A nullable numerical output gets the mean of the selected None indicators on
its flag direction (the source's flag for a numerical source, ``1 - sum_v e_v`` through
the ``one`` direction for a categorical one) and, at BOS, the flag of the default. So
the flag is 1 exactly where every selected value is None or nothing is selected and
the default is None, which is where `evaluate` returns None; where it would mix None
with values `evaluate` raises. None values read as 0 in the value coordinate.

Categorical Aggregate. The output is the mean of the selected one-hots: exact whenever
the selected values agree (the program's result), which is all a categorical
Aggregate may do; otherwise the evaluator raises or returns a mean of numbers and the
compiler warns (the analysis cannot prove the selection holds one value).

SelectorWidth. Selected keys and BOS share the top logit, so BOS gets
``1 / (w + 1)`` up to ``n e^{-C}``; the OV map writes minus that weight to a scratch
direction and an MLP (``numerical_mlp.discretising_mlp`` over the exact set
``{-1/(w+1)}``, gaps at least ``1/((n+1)(n+2))``) turns it into ``w``. The sign puts the
BOS position's value, -1 (BOS attends to itself), below every threshold, so the MLP's
ramps are off there without a BOS gate (see ``gated_mlp.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from rasplang.backend.chambers.selector import Term
from rasplang.backend.craft.bases import BasisDirection, VectorSpace, join
from rasplang.backend.craft.blocks import AttentionHead
from rasplang.backend.craft.maps import BilinearMap, LinearMap
from rasplang.backend.spaces import ONE, BosState, SOpSpace
from rasplang.nodes import SOp

#: Target bound on the softmax leakage's effect on any output coordinate.
LEAKAGE_TARGET = 1e-12


#: The target of a second build where the first is refused (`rasplang.compile`): a
#: colder softmax, whose leakage is far below what any amplification after it reaches.
COLD_LEAKAGE_TARGET = 1e-30


def coldness(max_seq_len: int, value_scale: float, margin: float,
             target: float = LEAKAGE_TARGET) -> float:
    """Logit scale ``C`` so that ``(n + 1) e^{-C margin} * value_scale <= target``,
    rounded up to a power of two: the logits are then integer or half-integer multiples
    of a power of two, exact in float32 and float64 where the inputs are exact one-hots,
    and equal logits stay equal (`float32`)."""
    c = math.log((max_seq_len + 1) * max(1.0, value_scale) / target) / margin
    return 2.0 ** math.ceil(math.log2(c))


def _constant(t: Term, spaces: Mapping[SOp, SOpSpace]) -> float | None:
    """The value of a term that is the same for every query and key value, where both
    SOps are categorical and never None (exactly one of their directions is hot at every
    real position, so the term is that value times ``one`` x ``one``); else None."""
    q, k = spaces[t.queries], spaces[t.keys]
    if q.numerical or k.numerical or q.nullable or k.nullable or not t.table.size:
        return None
    first = t.table.flat[0]
    return float(first) if bool((t.table == first).all()) else None


def selector_logits(
    terms: Sequence[Term], spaces: Mapping[SOp, SOpSpace], bos_level: float, scale: float,
    bos: BosState,
) -> BilinearMap:
    """The query-key bilinear map for ``terms`` with the BOS key at ``bos_level``. A term
    that is the same for every query and key (the always-true selector of `length`)
    reads ``one`` on both sides instead of the SOps' one-hots."""
    constant = {id(t): _constant(t, spaces) for t in terms}
    tables = [t for t in terms if constant[id(t)] is None]
    key_one = [ONE] if len(tables) < len(terms) else []  # where the constant terms read
    q_space = join(*(spaces[t.queries].space for t in tables), VectorSpace([ONE, bos.direction]))
    k_space = join(*(spaces[t.keys].space for t in tables), VectorSpace(key_one),
                   VectorSpace([bos.direction]))
    m = np.zeros((q_space.dim, k_space.dim))
    i_one, i_bos_q, i_bos_k = (q_space.index_of(ONE), q_space.index_of(bos.direction),
                                  k_space.index_of(bos.direction))
    for t in tables:
        qi = q_space.indices(spaces[t.queries].space)
        ki = k_space.indices(spaces[t.keys].space)
        m[np.ix_(qi, ki)] += t.table
    for d in key_one:
        m[i_one, k_space.index_of(d)] += sum(c for c in constant.values() if c is not None)
    key_at_bos = bos.vector(k_space.basis)
    key_at_bos[i_bos_k] = 1.0
    m[:, i_bos_k] -= m @ key_at_bos  # cancel what the keys' BOS state adds
    m[i_one, i_bos_k] += bos_level
    # The BOS query: make BOS beat every real key by at least 1/2.
    query_at_bos = bos.vector(q_space.basis)
    query_at_bos[i_one] = query_at_bos[i_bos_q] = 1.0
    row = query_at_bos @ m
    best = sum(max(0.0, float(row[k_space.indices(spaces[key].space)].max(initial=0.0)))
               for key in {id(t.keys): t.keys for t in tables}.values())
    best += sum(max(0.0, float(row[k_space.index_of(d)])) for d in key_one)
    m[i_bos_q, i_bos_k] += max(0.0, best + 0.5 - float(row[i_bos_k]))
    return BilinearMap(q_space, k_space, m * scale)


def distance_logits(
    reads: Sequence[tuple[SOpSpace, Sequence[float]]], keys: SOpSpace,
    key_values: Sequence[float], scale: float, bos: BosState,
) -> BilinearMap:
    """The query-key map ``2 k q - k^2`` of ``rasplang.backend.distance``: the query
    ``q = sum_j reads_j . x_j`` is read linearly from categorical SOps (one coefficient
    per value), the key ``k`` is ``key_values`` over the one-hot ``keys``; the BOS key
    scores ``-1/2`` for every real query, and a BOS query scores BOS at least 1/2 above
    every real key. Stored as its factors (rank 3: ``q`` x ``2k``, ``one`` x ``-k^2``,
    the BOS query x the BOS key)."""
    q_space = join(*(s.space for s, _ in reads), VectorSpace([ONE, bos.direction]))
    k_space = join(keys.space, VectorSpace([bos.direction]))
    i_one, i_bos_q, i_bos_k = (q_space.index_of(ONE), q_space.index_of(bos.direction),
                                  k_space.index_of(bos.direction))
    left, right = np.zeros((q_space.dim, 3)), np.zeros((k_space.dim, 3))
    for space, coefficients in reads:
        left[q_space.indices(space.space), 0] += coefficients
    left[i_one, 1] = 1.0
    k = np.asarray(key_values, dtype=float)
    ki = k_space.indices(keys.space)
    right[ki, 0], right[ki, 1] = 2 * k, -k * k
    key_at_bos = bos.vector(k_space.basis)  # cancel what the keys' BOS state adds
    right[i_bos_k, :2] = -(key_at_bos @ right[:, :2])
    right[i_bos_k, 1] -= 0.5
    query_at_bos = bos.vector(q_space.basis)
    query_at_bos[i_one] = query_at_bos[i_bos_q] = 1.0
    key_at_bos[i_bos_k] = 1.0
    row = (query_at_bos @ left) @ right.T
    beat = max(0.0, float(row[ki].max(initial=0.0)) + 0.5 - float(row @ key_at_bos))
    left[i_bos_q, 2], right[i_bos_k, 2] = beat, 1.0
    keep = [c for c in range(3) if left[:, c].any()]
    return BilinearMap.from_factors(q_space, k_space, left[:, keep] * scale, right[:, keep])


def logit_error(terms: Sequence[Term], spaces: Mapping[SOp, SOpSpace],
                l1: Callable[[SOpSpace], float] | None = None) -> float:
    """Bound (in logit units before scaling) on the logit error from input errors: a
    term's table entries are at most 1, so it moves by at most
    ``(1 + E_q)(1 + E_k) - 1``, ``E`` the error summed over a side's one-hot (``l1``,
    by default ``|values|`` times the per-coordinate float64 ``error``)."""
    if l1 is None:
        def l1(s: SOpSpace) -> float:
            return len(s.values) * s.error
    total = 0.0
    for t in terms:
        if _constant(t, spaces) is not None:  # read from ``one``: exact
            continue
        q, k = spaces[t.queries], spaces[t.keys]
        total += (1 + l1(q)) * (1 + l1(k)) - 1
    return total


def aggregate_head(
    label: str, terms: Sequence[Term], spaces: Mapping[SOp, SOpSpace], value: SOpSpace,
    out: SOpSpace, default: object, scale: float, causal: bool,
    bos: BosState, w_qk: BilinearMap | None = None,
) -> AttentionHead:
    """The head of an Aggregate: mean of the selected values, ``default`` if none. The
    query-key map is ``terms``' (`selector_logits`), or ``w_qk`` where given (the same
    levels: selected keys on top, BOS at least 1/2 and the others at least 1 below)."""
    if w_qk is None:
        w_qk = selector_logits(terms, spaces, len(terms) - 0.5, scale, bos)
    in_space = join(value.space, VectorSpace([ONE, bos.direction]))
    w = np.zeros((in_space.dim, out.space.dim))
    vi = in_space.indices(value.space)
    if out.numerical:
        w[vi, 0] = value.readout() / out.scale
        indicator = value.none_indicator()
        if out.nullable and indicator is not None:  # the mean of the None indicators
            dirs, weights, const = indicator
            w[in_space.indices(list(dirs)), 1] += weights
            w[in_space.index_of(ONE), 1] += const
    else:
        for i, v in zip(vi, value.values):
            w[i] = out.encode(v)
    at_bos = bos.vector(in_space.basis)
    at_bos[in_space.index_of(ONE)] = 1.0
    at_bos[in_space.index_of(bos.direction)] = 0.0
    w[in_space.index_of(bos.direction)] = out.encode(default) - at_bos @ w
    return AttentionHead(w_qk, LinearMap(in_space, out.space, w), causal=causal, label=label)


def scratch_value(width: int) -> float:
    """What a SelectorWidth's head writes to its scratch direction for ``width``."""
    return -1.0 / (width + 1)


def scratch_width(value: float) -> int:
    """The width a scratch value stands for (the inverse of `scratch_value`)."""
    return round(-1.0 / value - 1.0)


def selector_width_head(
    label: str, terms: Sequence[Term], spaces: Mapping[SOp, SOpSpace],
    scratch: BasisDirection, scale: float, causal: bool,
    bos: BosState,
) -> AttentionHead:
    """The head of a SelectorWidth: writes ``-1 / (width + 1)`` to ``scratch``."""
    w_qk = selector_logits(terms, spaces, float(len(terms)), scale, bos)
    w_ov = LinearMap(VectorSpace([bos.direction]), VectorSpace([scratch]), -np.ones((1, 1)))
    return AttentionHead(w_qk, w_ov, causal=causal, label=label)
