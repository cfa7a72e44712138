"""numba kernels: generic, table-driven, compiled once (``cache=True``) for every program.

Each kernel loops over the batch rows it is given and over the positions below each
sequence's length; padded positions get code 0. Kernels release the GIL, so the
backend runs slices of the batch in parallel threads (numba's own ``parallel=True``
depends on the threading layer; with the OpenMP layer on a 2-core machine each launch
cost ~30 ms, so the backend splits the batch itself). Errors never
raise inside a kernel: they set ``err[b]`` and the plan asks `rasplang.evaluate` for
the exact exception of the first offending sequence.

Selector values come from `_selected`, a tiny interpreter of the selector's register
program (`interpreter.selectors`): for ``(b, q, k)`` it returns 0 or 1, or 2 when a
predicate raised there. Aggregate and SelectorWidth call it inside their key loop,
so no ``[B, T, T]`` matrix is ever built.
"""

from __future__ import annotations

import numpy as np

from rasplang.interpreter._jit import jit
from rasplang.interpreter.tables import LIMB_BITS, MEAN, NUMBER, REEVALUATE, UNCOMPARABLE

LIMB = 1 << LIMB_BITS


@jit()
def _selected(ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, b, q, k, regs):
    """The selector's value at (b, q, k): 0, 1, or 2 if a predicate raised there."""
    n_ops = ops.shape[0]
    if n_ops == 1 and ops[0] == 0:  # one Select: the common case
        return pred[pred_off[0] + kcodes[0, b, k] * pred_nq[0] + qcodes[0, b, q]]
    bad = False
    for i in range(n_ops):
        op = ops[i]
        if op == 0:  # SELECT
            leaf = a0[i]
            v = pred[pred_off[leaf] + kcodes[leaf, b, k] * pred_nq[leaf] + qcodes[leaf, b, q]]
            if v == 2:
                bad = True
                v = 0
            regs[i] = v
        elif op == 1:  # CONST
            regs[i] = cmats[a0[i], q, k]
        elif op == 2:  # AND
            regs[i] = regs[a0[i]] & regs[a1[i]]
        elif op == 3:  # OR
            regs[i] = regs[a0[i]] | regs[a1[i]]
        else:  # NOT
            regs[i] = 1 - regs[a0[i]]
    if bad:
        return 2
    return regs[n_ops - 1]


@jit()
def positions_kernel(lengths, offset, per_sequence, out):
    """``out[b, t]`` = ``t`` (``indices``) or ``lengths[b] + offset`` (``length``, with
    ``per_sequence``) below each length, 0 after it."""
    n_batch, n_pos = out.shape
    for b in range(n_batch):
        n = lengths[b]
        for t in range(n):
            out[b, t] = n + offset if per_sequence else t
        for t in range(n, n_pos):
            out[b, t] = 0


@jit()
def map_kernel(lut, codes, lengths, out, err):
    """``out[b, t] = lut[codes[b, t]]``; a negative entry (f raised) flags ``err[b]``."""
    n_batch, n_pos = out.shape
    for b in range(n_batch):
        n = lengths[b]
        for t in range(n):
            c = lut[codes[b, t]]
            if c < 0:
                err[b] = 1
                c = 0
            out[b, t] = c
        for t in range(n, n_pos):
            out[b, t] = 0


@jit()
def sequence_map_kernel(lut, fst, snd, lengths, out, err):
    """``out[b, t] = lut[fst[b, t], snd[b, t]]``; negative entries flag ``err[b]``."""
    n_batch, n_pos = out.shape
    for b in range(n_batch):
        n = lengths[b]
        for t in range(n):
            c = lut[fst[b, t], snd[b, t]]
            if c < 0:
                err[b] = 1
                c = 0
            out[b, t] = c
        for t in range(n, n_pos):
            out[b, t] = 0


@jit(inline=True)
def _fill_row(ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, b, q, stop,
              regs, row):
    """``row[k]`` = the selector's value at (b, q, k) for ``k < stop`` (0, 1 or 2)."""
    if ops.shape[0] == 1 and ops[0] == 0:  # one Select: a gather from its table
        base = pred_off[0] + qcodes[0, b, q]
        step = pred_nq[0]
        kc = kcodes[0, b]
        for k in range(stop):
            row[k] = pred[base + kc[k] * step]
    else:
        for k in range(stop):
            row[k] = _selected(ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats,
                               b, q, k, regs)


@jit(inline=True)
def mean_code(total, count, denom, mean_values, mean_codes):
    """The exact mean ``total / (count * denom)`` and its code among the table's floats
    ``mean_values`` (sorted, codes ``mean_codes``), or `MEAN` (-1) when it is not there.

    Exact only when ``total`` and ``count * denom`` are at most 2**53 (`NumericInfo.fast`).
    """
    m = np.float64(total) / np.float64(count * denom)
    i = np.searchsorted(mean_values, m)
    if i < mean_values.shape[0] and mean_values[i] == m:
        return m, mean_codes[i]
    return m, MEAN


@jit(inline=True)
def reduce_row(row, stop, limit, vc, remap, kind, high, low, denom, exact, fast,
               default_code, mean_values, mean_codes, out, acc, b, q):
    """One query of an Aggregate, following `rasplang.evaluator.aggregate_row`.

    ``row[k]`` (``k < stop``) is the selector's value at key ``k`` (0, 1, or 2 where a
    predicate raised); keys at or after ``limit`` are masked (causal). Writes ``out[b, q]``
    and, for a mean left to the plan (`MEAN`), ``acc[b, q]`` = (count, high limb sum, low
    limb sum) of the exact scaled sum (`interpreter.tables.NumericInfo`); returns whether
    the sequence is an error.
    """
    count = 0
    first = 0
    same = True
    allnum = True
    bad = False
    hsum = 0
    lsum = 0
    for k in range(stop):
        s = row[k]
        if s == 0:
            continue
        if s == 2:
            bad = True
            continue
        if k >= limit:
            continue
        c = vc[k]
        if count == 0:
            first = c
        elif c != first:
            same = False
        if kind[c] == NUMBER:
            hsum += high[c]
            lsum += low[c]
        else:
            allnum = False
        count += 1
    if count == 0:
        out[b, q] = default_code
    elif count == 1:
        out[b, q] = remap[first]
    elif allnum and not exact:
        out[b, q] = REEVALUATE
    elif allnum:
        code = MEAN
        if fast:  # one exact division, looked up among the table's floats
            _, code = mean_code(hsum * LIMB + lsum, count, denom, mean_values, mean_codes)
        if code == MEAN:  # not there (or not fast): the plan divides
            acc[b, q, 0] = count
            acc[b, q, 1] = hsum
            acc[b, q, 2] = lsum
        out[b, q] = code
    elif same and kind[first] == UNCOMPARABLE:  # equal as objects, maybe not in evaluate
        out[b, q] = REEVALUATE
    elif same:
        out[b, q] = remap[first]
    else:
        bad = True
        out[b, q] = 0
    return bad


@jit()
def aggregate_kernel(
    ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, may_error,
    lengths, causal, vcodes, remap, kind, high, low, denom, exact, fast, default_code,
    mean_values, mean_codes, out, acc, err,
):
    """Fused Select + Aggregate, following `rasplang.evaluator.aggregate_row`.

    ``out[b, q]``: a code of the Aggregate's table, or `MEAN` (an exact mean the table's
    floats ``mean_values`` (sorted, codes ``mean_codes``) do not hold, or that the
    kernel cannot divide exactly; its sums in ``acc[b, q]``), or `REEVALUATE` (see
    `interpreter.tables`).
    """
    n_batch, n_pos = out.shape
    regs = np.empty(ops.shape[0], np.uint8)
    row = np.empty(n_pos, np.int8)
    for b in range(n_batch):
        n = lengths[b]
        vc = vcodes[b]
        for q in range(n):
            stop = n if (may_error or not causal) else q + 1
            _fill_row(ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, b, q,
                      stop, regs, row)
            limit = q + 1 if causal else n
            if reduce_row(row, stop, limit, vc, remap, kind, high, low, denom, exact, fast,
                          default_code, mean_values, mean_codes, out, acc, b, q):
                err[b] = 1
        for q in range(n, n_pos):
            out[b, q] = 0


@jit()
def width_kernel(
    ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, may_error,
    lengths, causal, out, err,
):
    """Fused Select + SelectorWidth: the number of selected keys (= its code)."""
    n_batch, n_pos = out.shape
    regs = np.empty(ops.shape[0], np.uint8)
    row = np.empty(n_pos, np.int8)
    for b in range(n_batch):
        n = lengths[b]
        bad = 0
        for q in range(n):
            stop = n if (may_error or not causal) else q + 1
            _fill_row(ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, b, q,
                      stop, regs, row)
            limit = q + 1 if causal else n
            count = 0
            for k in range(stop):
                s = row[k]
                bad |= s == 2
                count += (s == 1) & (k < limit)
            out[b, q] = count
        if bad:
            err[b] = 1
        for q in range(n, n_pos):
            out[b, q] = 0


@jit()
def selector_kernel(
    ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, lengths, causal, out, err,
):
    """The selector matrix ``out[b, q, k]`` (only for selectors a caller asked for)."""
    n_batch = out.shape[0]
    for b in range(n_batch):
        n = lengths[b]
        regs = np.empty(ops.shape[0], np.uint8)
        for q in range(n):
            for k in range(n):
                s = _selected(ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats,
                              b, q, k, regs)
                if s == 2:
                    err[b] = 1
                    s = 0
                if causal and k > q:
                    s = 0
                out[b, q, k] = s
