"""Counting kernels: SelectorWidth and Aggregate of one Select from per-key-code sums.

A Select's rows are runs of key codes (`interpreter.runs.KeyRuns`). Per sequence the
kernels sum, per key code, what an Aggregate needs about the keys' values (how many, the
sum of their value codes, the sum of their `value_weights`); each query then adds these
sums over the runs of its row. The backend picks one kernel per node and chunk:

- *positions* kernels, when the keys are ``indices`` (key code = position): prefix sums
  over positions, one difference per run, ``O(T * runs)``. Causal masking clips each run
  to codes ``<= q`` (``clip=True``).
- *point* kernels, non-causal, when every row holds at most one key code (EQ): per-code
  sums and one lookup per query, ``O(T)`` (a direct index lookup for unique keys).
- *prefix* kernels, non-causal, any rows: prefix sums over key codes,
  ``O(n_keys + T * runs)`` per sequence instead of the generic ``O(T * T)``.
- *running* kernels, causal, other keys: sums grow as ``q`` advances and a query adds
  every selected code, ``O(T * selected codes)``.

An Aggregate query whose answer the sums do not determine (several selected values, not
all numbers; a mean that ``tab`` does not hold) gets the marker `REDUCE`; then
`reduce_marked_kernel` reduces those queries key by key with
`kernels_numba.reduce_row`, the generic kernel's own reduction, so results are
identical. Predicate tables with error entries never come here (see `key_runs`).
"""

from __future__ import annotations

import numpy as np

from rasplang.interpreter._jit import jit
from rasplang.interpreter.kernels_numba import reduce_row
from rasplang.interpreter.tables import NUMBER

#: ``out`` marker of a query left to `reduce_marked_kernel`.
REDUCE = -4


def answer_table(num: np.ndarray, denom: int, n_pos: int, mean_values: np.ndarray,
                 mean_codes: np.ndarray, default_code: int,
                 budget: int = 1 << 14) -> tuple[np.ndarray, int]:
    """``(tab, tmin)``: ``tab[count, total - tmin]`` is the code of a query that selects
    ``count != 1`` values whose `value_weights` sum to ``total``: ``default_code`` for no
    value, the code of the exact mean of ``count >= 2`` numbers, or `REDUCE` when the
    Aggregate's table lacks that mean. It covers every sum of up to ``n_pos`` numbers
    when that takes at most ``budget`` entries, else only ``count = 0`` (1 x 1).

    ``np.float64(total) / np.float64(count * denom)`` is the kernels' own division
    (`kernels_numba.mean_code`), so the table holds the codes they would find. Only for
    tables whose `NumericInfo.fast` holds (``num`` is the one-word scaled integer).
    """
    lo = n_pos * min(0, int(num.min(initial=0)))
    hi = n_pos * max(0, int(num.max(initial=0)))
    if (n_pos + 1) * (hi - lo + 1) > budget:
        return np.full((1, 1), default_code, np.int32), 0
    tab = np.full((n_pos + 1, hi - lo + 1), REDUCE, np.int32)  # [count, total - tmin]
    tab[0, -lo] = default_code  # no value selected: the sum is 0
    if len(mean_values) and n_pos >= 2:
        counts = np.arange(2, n_pos + 1, dtype=np.int64)[:, None] * denom  # [T - 1, 1]
        totals = np.arange(lo, hi + 1, dtype=np.int64)[None, :]  # [1, span]
        means = totals.astype(np.float64) / counts.astype(np.float64)  # [T - 1, span]
        at = np.minimum(np.searchsorted(mean_values, means), len(mean_values) - 1)
        tab[2:] = np.where(mean_values[at] == means, mean_codes[at], REDUCE)
    return tab, lo


def value_weights(kind: np.ndarray, num: np.ndarray, tab: np.ndarray) -> np.ndarray:
    """Per value code, what the kernels sum into ``tot``: the scaled integer of a number,
    and for a non-number a weight larger than ``tab``'s span, so that any sum with a
    non-number in it falls outside the table (and the query is reduced key by key)."""
    return np.where(kind == NUMBER, num, tab.shape[1] + 1).astype(np.int64)


@jit(inline=True)
def _prefix(stat, n_keys):
    """Turn per-code totals ``stat[c + 1]`` into prefix sums ``stat[c] = sum(codes < c)``."""
    for c in range(n_keys):
        stat[c + 1] += stat[c]


@jit()
def width_prefix_kernel(kcodes, qcodes, ptr, lo, hi, n_keys, lengths, out):
    """SelectorWidth of one Select without error entries: ``out[b, q]`` = selected keys."""
    n_batch, n_pos = out.shape
    cnt = np.zeros(n_keys + 1, np.int32)  # zero whenever a sequence starts
    seen = np.zeros(ptr.shape[0] - 1, np.int64)  # query code done in row b + 1
    memo = np.zeros(ptr.shape[0] - 1, np.int32)
    for b in range(n_batch):
        n = lengths[b]
        kc = kcodes[b]
        qc = qcodes[b]
        for k in range(n):
            cnt[kc[k] + 1] += 1
        _prefix(cnt, n_keys)
        for q in range(n):
            x = qc[q]
            if seen[x] == b + 1:  # same query code, same keys
                out[b, q] = memo[x]
                continue
            s = 0
            for r in range(ptr[x], ptr[x + 1]):
                s += cnt[hi[r]] - cnt[lo[r]]
            out[b, q] = s
            seen[x] = b + 1
            memo[x] = s
        cnt[:] = 0
        for q in range(n, n_pos):
            out[b, q] = 0


@jit()
def width_positions_kernel(qcodes, ptr, lo, hi, lengths, clip, out):
    """SelectorWidth of one Select whose keys are ``indices`` (key code = position): a run
    ``[lo, hi)`` selects ``min(hi, n) - lo`` keys (clipped to ``q + 1`` when causal)."""
    n_batch, n_pos = out.shape
    for b in range(n_batch):
        n = lengths[b]
        qc = qcodes[b]
        top = n
        for q in range(n):
            x = qc[q]
            if clip:
                top = q + 1
            s = 0
            for r in range(ptr[x], ptr[x + 1]):
                h = min(hi[r], top)
                if h > lo[r]:
                    s += h - lo[r]
            out[b, q] = s
        for q in range(n, n_pos):
            out[b, q] = 0


@jit()
def width_point_kernel(kcodes, qcodes, point, n_keys, lengths, out):
    """SelectorWidth when each query code selects at most the key code ``point[qc]``."""
    n_batch, n_pos = out.shape
    cnt = np.zeros(n_keys, np.int32)  # zero whenever a sequence starts
    for b in range(n_batch):
        n = lengths[b]
        kc = kcodes[b]
        qc = qcodes[b]
        for k in range(n):
            cnt[kc[k]] += 1
        for q in range(n):
            c = point[qc[q]]
            out[b, q] = 0 if c < 0 else cnt[c]
        for k in range(n):
            cnt[kc[k]] = 0
        for q in range(n, n_pos):
            out[b, q] = 0


@jit()
def width_running_kernel(kcodes, qcodes, ptr, lo, hi, n_keys, lengths, out):
    """Causal SelectorWidth of one Select without error entries (any keys)."""
    n_batch, n_pos = out.shape
    cnt = np.zeros(n_keys, np.int32)  # zero whenever a sequence starts
    for b in range(n_batch):
        n = lengths[b]
        kc = kcodes[b]
        qc = qcodes[b]
        for q in range(n):
            cnt[kc[q]] += 1
            s = 0
            for r in range(ptr[qc[q]], ptr[qc[q] + 1]):
                for j in range(lo[r], hi[r]):
                    s += cnt[j]
            out[b, q] = s
        for k in range(n):
            cnt[kc[k]] = 0
        for q in range(n, n_pos):
            out[b, q] = 0


@jit(inline=True)
def _answer(count, vsum, total, remap, tab, tmin):
    """A query's code from its sums (`answer_table`), or `REDUCE` when they do not fix it."""
    if count == 1:
        return remap[vsum]  # the one selected value code
    i = total - tmin  # outside the table when a non-number was selected (`value_weights`)
    if count < tab.shape[0] and 0 <= i < tab.shape[1]:
        return tab[count, i]
    return REDUCE


@jit()
def aggregate_prefix_kernel(kcodes, qcodes, ptr, lo, hi, n_keys, lengths, vcodes,
                            remap, weight, tab, tmin, out, need):
    """Aggregate of one Select without error entries: codes, or `REDUCE` (``need[b]``).

    Per key code: ``cnt`` keys, ``vs`` sum of value codes (the value code itself when one
    key is selected), ``tot`` sum of `value_weights` (scaled integers; non-numbers push
    the sum out of ``tab``).
    """
    n_batch, n_pos = out.shape
    cnt = np.zeros(n_keys + 1, np.int64)  # all three are zero whenever a sequence starts
    vs = np.zeros(n_keys + 1, np.int64)
    tot = np.zeros(n_keys + 1, np.int64)
    for b in range(n_batch):
        n = lengths[b]
        kc = kcodes[b]
        qc = qcodes[b]
        vc = vcodes[b]
        for k in range(n):
            c = kc[k] + 1
            v = vc[k]
            cnt[c] += 1
            vs[c] += v
            tot[c] += weight[v]
        _prefix(cnt, n_keys)
        _prefix(vs, n_keys)
        _prefix(tot, n_keys)
        for q in range(n):
            x = qc[q]
            count = vsum = total = 0
            for r in range(ptr[x], ptr[x + 1]):
                h = hi[r]
                lw = lo[r]
                count += cnt[h] - cnt[lw]
                vsum += vs[h] - vs[lw]
                total += tot[h] - tot[lw]
            code = _answer(count, vsum, total, remap, tab, tmin)
            out[b, q] = code
            if code == REDUCE:
                need[b] = 1
        cnt[:] = 0
        vs[:] = 0
        tot[:] = 0
        for q in range(n, n_pos):
            out[b, q] = 0


@jit()
def aggregate_positions_kernel(qcodes, ptr, lo, hi, lengths, clip, vcodes, remap, weight,
                               tab, tmin, out, need):
    """Aggregate of one Select whose keys are ``indices`` (key code = position): prefix
    sums over positions, no counting pass; otherwise as `aggregate_prefix_kernel`."""
    n_batch, n_pos = out.shape
    vs = np.zeros(n_pos + 1, np.int64)  # vs[k]: sum of the value codes before position k
    tot = np.zeros(n_pos + 1, np.int64)
    for b in range(n_batch):
        n = lengths[b]
        qc = qcodes[b]
        vc = vcodes[b]
        for k in range(n):
            v = vc[k]
            vs[k + 1] = vs[k] + v
            tot[k + 1] = tot[k] + weight[v]
        top = n
        for q in range(n):
            x = qc[q]
            if clip:
                top = q + 1
            count = vsum = total = 0
            for r in range(ptr[x], ptr[x + 1]):
                h = min(hi[r], top)
                lw = lo[r]
                if h > lw:
                    count += h - lw
                    vsum += vs[h] - vs[lw]
                    total += tot[h] - tot[lw]
            code = _answer(count, vsum, total, remap, tab, tmin)
            out[b, q] = code
            if code == REDUCE:
                need[b] = 1
        for q in range(n, n_pos):
            out[b, q] = 0


@jit()
def aggregate_point_kernel(kcodes, qcodes, point, n_keys, lengths, vcodes, remap,
                           weight, tab, tmin, out, need):
    """Aggregate when each query code selects at most the key code ``point[qc]`` (e.g. EQ
    on unique keys: a direct lookup); as the prefix kernel, with per-code sums."""
    n_batch, n_pos = out.shape
    cnt = np.zeros(n_keys, np.int64)  # all three are zero whenever a sequence starts
    vs = np.zeros(n_keys, np.int64)
    tot = np.zeros(n_keys, np.int64)
    for b in range(n_batch):
        n = lengths[b]
        kc = kcodes[b]
        qc = qcodes[b]
        vc = vcodes[b]
        for k in range(n):
            c = kc[k]
            v = vc[k]
            cnt[c] += 1
            vs[c] += v
            tot[c] += weight[v]
        for q in range(n):
            c = point[qc[q]]
            if c < 0:
                out[b, q] = tab[0, -tmin]  # nothing selected: the default
                continue
            code = _answer(cnt[c], vs[c], tot[c], remap, tab, tmin)
            out[b, q] = code
            if code == REDUCE:
                need[b] = 1
        for k in range(n):
            c = kc[k]
            cnt[c] = vs[c] = tot[c] = 0
        for q in range(n, n_pos):
            out[b, q] = 0


@jit()
def aggregate_running_kernel(kcodes, qcodes, ptr, lo, hi, n_keys, lengths, vcodes, remap,
                             weight, tab, tmin, out, need):
    """Causal Aggregate of one Select without error entries (any keys); as the prefix
    kernel, with running sums."""
    n_batch, n_pos = out.shape
    cnt = np.zeros(n_keys, np.int64)  # all three are zero whenever a sequence starts
    vs = np.zeros(n_keys, np.int64)
    tot = np.zeros(n_keys, np.int64)
    for b in range(n_batch):
        n = lengths[b]
        kc = kcodes[b]
        qc = qcodes[b]
        vc = vcodes[b]
        for q in range(n):
            c = kc[q]
            v = vc[q]
            cnt[c] += 1
            vs[c] += v
            tot[c] += weight[v]
            count = vsum = total = 0
            for r in range(ptr[qc[q]], ptr[qc[q] + 1]):
                for j in range(lo[r], hi[r]):
                    count += cnt[j]
                    vsum += vs[j]
                    total += tot[j]
            code = _answer(count, vsum, total, remap, tab, tmin)
            out[b, q] = code
            if code == REDUCE:
                need[b] = 1
        for k in range(n):
            c = kc[k]
            cnt[c] = vs[c] = tot[c] = 0
        for q in range(n, n_pos):
            out[b, q] = 0


@jit()
def reduce_marked_kernel(kcodes, qcodes, pred, pred_nq, lengths, causal, vcodes, remap,
                         kind, high, low, denom, exact, fast, default_code, mean_values,
                         mean_codes, need, out, acc, err):
    """Reduce every `REDUCE` query of the rows with ``need[b]`` key by key
    (`kernels_numba.reduce_row`); outputs and error flags as `aggregate_kernel`."""
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
            if reduce_row(row, n, q + 1 if causal else n, vcodes[b], remap, kind, high, low,
                          denom, exact, fast, default_code, mean_values, mean_codes, out, acc,
                          b, q):
                err[b] = 1
