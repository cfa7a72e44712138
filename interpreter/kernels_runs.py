"""Counting kernels: SelectorWidth and Aggregate of one Select from per-key-code sums.

A Select's rows are runs of key codes (`interpreter.runs.KeyRuns`). Per sequence the
kernels sum, per key code, what an Aggregate needs about the keys' values: the `STATS`
rows of ``st`` (how many keys, the sum of their value codes, the sum of their
`value_weights`). A SelectorWidth needs the first only: it passes None for ``vcodes`` and
the other value arguments, and numba compiles that case separately, without the value
sums. Each query then adds the sums over the runs of its row. Three helpers hold that
arithmetic for every kernel: `_add_key` puts a key into its code's sums, `_gather` adds
a code's sums into a query's, and `_emit` turns a query's sums into its output. The
backend picks one kernel per node and chunk:

- `prefix_sums_kernel`, non-causal, or causal when the keys are ``indices`` (key code =
  position, ``positions``): prefix sums over key codes, one difference per run,
  ``O(n_keys + T * runs)`` per sequence instead of the generic ``O(T * T)``; causal
  masking clips each run to positions ``<= q``.
- `code_sums_kernel`: sums per key code. Non-causal when every row holds at most one key
  code (EQ): one lookup per query, ``O(T)``. Causal, other keys: sums grow as ``q``
  advances and a query adds every selected code, ``O(T * selected codes)``.

An Aggregate query whose answer the sums do not determine (several selected values, not
all numbers; a mean that ``tab`` does not hold) gets the marker `REDUCE`; then
`reduce_marked_kernel` reduces those queries key by key with
`kernels_numba.reduce_row`, the generic kernel's own reduction, so results are
identical. ``tab`` itself (`answer_table`) is filled by `kernels_numba.mean_code`, the
generic kernel's division. Predicate tables with error entries never come here (see
`interpreter.runs.key_runs`).
"""

from __future__ import annotations

import numpy as np

from rasplang.interpreter._jit import jit
from rasplang.interpreter.codes import MEAN, NO_KEY, NUMBER, REDUCE
from rasplang.interpreter.kernels_numba import mean_code, reduce_row

#: Rows of the per-key-code sums ``st``: count, sum of value codes, sum of value weights.
STATS = 3


@jit()
def _fill_means(tab, tmin, denom, mean_values, mean_codes):
    """``tab[count, total - tmin]`` for ``count >= 2``: the code `mean_code` finds for the
    mean of ``count`` numbers whose scaled integers sum to ``total``, or `REDUCE`."""
    for count in range(2, tab.shape[0]):
        for i in range(tab.shape[1]):
            _, code = mean_code(i + tmin, count, denom, mean_values, mean_codes)
            tab[count, i] = REDUCE if code == MEAN else code


def answer_table(num: np.ndarray, denom: int, n_pos: int, mean_values: np.ndarray,
                 mean_codes: np.ndarray, default_code: int,
                 budget: int = 1 << 14) -> tuple[np.ndarray, int]:
    """``(tab, tmin)``: ``tab[count, total - tmin]`` is the code of a query that selects
    ``count != 1`` values whose `value_weights` sum to ``total``: ``default_code`` for no
    value, the code of the exact mean of ``count >= 2`` numbers, or `REDUCE` when the
    Aggregate's table lacks that mean. It covers every sum of up to ``n_pos`` numbers
    when that takes at most ``budget`` entries, else only ``count = 0`` (1 x 1).

    Only for tables whose `NumericInfo.fast` holds (``num`` is the one-word scaled
    integer, and ``mean_code``'s one division is exact).
    """
    lo = n_pos * min(0, int(num.min(initial=0)))
    hi = n_pos * max(0, int(num.max(initial=0)))
    if (n_pos + 1) * (hi - lo + 1) > budget:
        return np.full((1, 1), default_code, np.int32), 0
    tab = np.full((n_pos + 1, hi - lo + 1), REDUCE, np.int32)  # [count, total - tmin]
    tab[0, -lo] = default_code  # no value selected: the sum is 0
    _fill_means(tab, lo, denom, mean_values, mean_codes)
    return tab, lo


def value_weights(kind: np.ndarray, num: np.ndarray, tab: np.ndarray) -> np.ndarray:
    """Per value code, what the kernels sum into ``st[2]``: the scaled integer of a
    number, and for a non-number a weight larger than ``tab``'s span, so that any sum with
    a non-number in it falls outside the table (and the query is reduced key by key)."""
    return np.where(kind == NUMBER, num, tab.shape[1] + 1).astype(np.int64)


# ---------------------------------------------------------------- shared arithmetic

@jit(helper=True)
def _add_key(st, c, vcodes, b, k, weight):
    """Put key ``k`` of sequence ``b`` into the sums of key code ``c``."""
    st[0, c] += 1
    if vcodes is not None:
        v = vcodes[b, k]
        st[1, c] += v
        st[2, c] += weight[v]


@jit(helper=True)
def _gather(st, c, sign, count, vsum, total, vcodes):
    """A query's sums plus ``sign`` times the sums of code ``c``."""
    count += sign * st[0, c]
    if vcodes is not None:
        vsum += sign * st[1, c]
        total += sign * st[2, c]
    return count, vsum, total


@jit(helper=True)
def _emit(count, vsum, total, vcodes, remap, tab, tmin, out, need, b, q):
    """``out[b, q]`` from a query's sums: the count (SelectorWidth), or the Aggregate's
    code from ``tab`` (`answer_table`), or `REDUCE` (and ``need[b]``) when they do not fix
    it."""
    if vcodes is None:
        out[b, q] = count
        return
    i = total - tmin  # outside the table when a non-number was selected (`value_weights`)
    if count == 1:
        code = remap[vsum]  # the one selected value code
    elif count < tab.shape[0] and 0 <= i < tab.shape[1]:
        code = tab[count, i]
    else:
        code = REDUCE
    out[b, q] = code
    if code == REDUCE:
        need[b] = 1


@jit(helper=True)
def _clear(st, kc, n, vcodes):
    """Zero the sums of the key codes ``kc[:n]`` of one sequence."""
    rows = 1 if vcodes is None else STATS
    for k in range(n):
        for s in range(rows):
            st[s, kc[k]] = 0


# ----------------------------------------------------------------------- kernels

@jit()
def prefix_sums_kernel(kcodes, qcodes, ptr, lo, hi, n_keys, lengths, positions, causal,
                       vcodes, remap, weight, tab, tmin, out, need):
    """Prefix sums over key codes: ``st[:, c]`` = the sums of the keys with codes below
    ``c``, so a run ``[lo, hi)`` adds ``st[:, hi] - st[:, lo]``. With ``positions`` (key
    code = position, so codes stay below the length ``n``) a causal query clips each run
    to ``q + 1``; without it ``causal`` must be False."""
    rows = 1 if vcodes is None else STATS
    st = np.zeros((STATS, n_keys + 1), np.int64)  # zero whenever a sequence starts
    seen = np.zeros(ptr.shape[0] - 1, np.int64)  # query code done in row b + 1
    memo = np.zeros(ptr.shape[0] - 1, np.int32)
    for b in range(out.shape[0]):
        n = lengths[b]
        kc = kcodes[b]
        qc = qcodes[b]
        span = n if positions else n_keys  # codes below span: st[:, span:] stays equal
        for k in range(n):
            _add_key(st, kc[k] + 1, vcodes, b, k, weight)
        for s in range(rows):
            for c in range(span):
                st[s, c + 1] += st[s, c]
        top = span
        for q in range(n):
            x = qc[q]
            if causal:
                top = q + 1
            elif seen[x] == b + 1:  # same query code, same keys
                out[b, q] = memo[x]
                continue
            count = vsum = total = 0
            for r in range(ptr[x], ptr[x + 1]):
                h = min(hi[r], top)
                if h > lo[r]:
                    count, vsum, total = _gather(st, h, 1, count, vsum, total, vcodes)
                    count, vsum, total = _gather(st, lo[r], -1, count, vsum, total, vcodes)
            _emit(count, vsum, total, vcodes, remap, tab, tmin, out, need, b, q)
            seen[x] = b + 1
            memo[x] = out[b, q]
        st[:rows, : span + 1] = 0
        out[b, n:] = 0


@jit()
def code_sums_kernel(kcodes, qcodes, ptr, lo, hi, point, n_keys, lengths, causal, vcodes,
                     remap, weight, tab, tmin, out, need):
    """Sums per key code: a query adds the sums of each code it selects, the one code
    ``point[qc]`` (when every row holds at most one: EQ; a direct lookup for unique keys),
    or when ``point`` is None every code of its runs. Causal (any keys): the sums grow as
    ``q`` advances."""
    st = np.zeros((STATS, n_keys), np.int64)  # zero whenever a sequence starts
    for b in range(out.shape[0]):
        n = lengths[b]
        kc = kcodes[b]
        if not causal:
            for k in range(n):
                _add_key(st, kc[k], vcodes, b, k, weight)
        for q in range(n):
            if causal:
                _add_key(st, kc[q], vcodes, b, q, weight)
            x = qcodes[b, q]
            count = vsum = total = 0
            if point is not None:
                if point[x] != NO_KEY:
                    count, vsum, total = _gather(st, point[x], 1, count, vsum, total, vcodes)
            else:
                for r in range(ptr[x], ptr[x + 1]):
                    for j in range(lo[r], hi[r]):
                        count, vsum, total = _gather(st, j, 1, count, vsum, total, vcodes)
            _emit(count, vsum, total, vcodes, remap, tab, tmin, out, need, b, q)
        _clear(st, kc, n, vcodes)
        out[b, n:] = 0


@jit()
def reduce_marked_kernel(kcodes, qcodes, pred, pred_nq, lengths, causal, vcodes, remap,
                         kind, high, low, denom, exact, fast, default_code, mean_values,
                         mean_codes, need, out, acc, err):
    """Reduce every `REDUCE` query of the rows with ``need[b]`` key by key
    (`kernels_numba.reduce_row`); outputs and error flags as the generic kernel's."""
    n_batch, n_pos = out.shape
    row = np.empty(n_pos, np.int8)
    for b in range(n_batch):
        if not need[b]:
            continue
        n = lengths[b]
        kc = kcodes[b]
        for q in range(n):
            if out[b, q] != REDUCE:
                continue
            x = qcodes[b, q]
            for k in range(n):
                row[k] = pred[kc[k] * pred_nq + x]
            if reduce_row(row, n, q + 1 if causal else n, vcodes, remap, kind, high, low,
                          denom, exact, fast, default_code, mean_values, mean_codes, out, acc,
                          b, q):
                err[b] = 1
