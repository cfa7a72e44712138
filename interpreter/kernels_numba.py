"""numba kernels: generic, table-driven, compiled once (``cache=True``) for every program.

Each kernel loops over the batch rows it is given and over the positions below each
sequence's length; padded positions get code 0. Kernels release the GIL, so the
backend runs slices of the batch in parallel threads (numba's own ``parallel=True``
depends on the threading layer; with the OpenMP layer on a 2-core machine each launch
cost ~30 ms, so the backend splits the batch itself). Errors never
raise inside a kernel: they set ``err[b]`` and the plan asks `rasplang.evaluate` for
the exact exception of the first offending sequence.

Selector values come from `_selected`, a tiny interpreter of the selector's register
program (`interpreter.selectors`): for ``(b, q, k)`` it returns `PRED_FALSE`,
`PRED_TRUE`, or `PRED_ERROR` when a predicate raised there. `fused_select_kernel` runs
the same program one op at a time over a query's row of keys (`_fill_row`), so no
``[B, T, T]`` matrix is ever built.

The Aggregate rule of `rasplang.evaluator.aggregate_row` is written once for compiled
code, in the helper `reduce_row` (with `mean_code`, the one division of a mean): the
generic kernel and `kernels_runs` (the counting kernels' table of means and their
key-by-key fallback) call it. A SelectorWidth is the same kernel with None for the value
arguments (numba compiles that case on its own, count only). The CUDA kernel of
`kernels_cupy` follows it line for line, and tests/differential/test_interpreter_cuda.py
compiles that source on the CPU to compare the two. Helpers are compiled with
``jit(helper=True)`` (see `interpreter._jit` for why not ``inline="always"``).
"""

from __future__ import annotations

import numpy as np

from rasplang.interpreter._jit import jit
from rasplang.interpreter.codes import (
    AND,
    CONST,
    LIMB_BITS,
    MEAN,
    NUMBER,
    OR,
    PRED_ERROR,
    PRED_FALSE,
    REEVALUATE,
    SELECT,
    UNCOMPARABLE,
)

LIMB = 1 << LIMB_BITS


@jit(helper=True)
def _selected(ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, b, q, k, regs):
    """The selector's value at (b, q, k): `PRED_FALSE`, `PRED_TRUE`, or `PRED_ERROR` if a
    predicate raised there."""
    n_ops = ops.shape[0]
    if n_ops == 1 and ops[0] == SELECT:  # one Select: the common case
        return pred[pred_off[0] + kcodes[0, b, k] * pred_nq[0] + qcodes[0, b, q]]
    bad = False
    for i in range(n_ops):
        op = ops[i]
        if op == SELECT:
            leaf = a0[i]
            v = pred[pred_off[leaf] + kcodes[leaf, b, k] * pred_nq[leaf] + qcodes[leaf, b, q]]
            if v == PRED_ERROR:
                bad = True
                v = PRED_FALSE
            regs[i] = v
        elif op == CONST:
            regs[i] = cmats[a0[i], q, k]
        elif op == AND:
            regs[i] = regs[a0[i]] & regs[a1[i]]
        elif op == OR:
            regs[i] = regs[a0[i]] | regs[a1[i]]
        else:  # NOT
            regs[i] = 1 - regs[a0[i]]
    if bad:
        return PRED_ERROR
    return regs[n_ops - 1]


@jit()
def positions_kernel(lengths, offset, per_sequence, out):
    """``out[b, t]`` = ``t`` (``indices``) or ``lengths[b] + offset`` (``length``, with
    ``per_sequence``) below each length, 0 after it."""
    for b in range(out.shape[0]):
        n = lengths[b]
        for t in range(n):
            out[b, t] = n + offset if per_sequence else t
        out[b, n:] = 0


@jit(helper=True)
def _store(c, out, err, b, t):
    """``out[b, t] = c``, or 0 with ``err[b]`` set when ``c`` is negative (`RAISED`)."""
    if c < 0:
        err[b] = 1
        c = 0
    out[b, t] = c


@jit()
def map_kernel(lut, codes, lengths, out, err):
    """``out[b, t] = lut[codes[b, t]]``; a negative entry (f raised) flags ``err[b]``."""
    for b in range(out.shape[0]):
        n = lengths[b]
        for t in range(n):
            _store(lut[codes[b, t]], out, err, b, t)
        out[b, n:] = 0


@jit()
def sequence_map_kernel(lut, fst, snd, lengths, out, err):
    """``out[b, t] = lut[fst[b, t], snd[b, t]]``; negative entries flag ``err[b]``."""
    for b in range(out.shape[0]):
        n = lengths[b]
        for t in range(n):
            _store(lut[fst[b, t], snd[b, t]], out, err, b, t)
        out[b, n:] = 0


@jit(helper=True)
def _fill_row(ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, b, q, stop,
              regs, row):
    """``row[k]`` = the selector's value at (b, q, k) for ``k < stop``, as `_selected`
    gives it, with the register program run one op at a time over the whole row:
    ``regs [n_ops, n_pos]`` holds each op's row, so an op is dispatched once per query
    instead of once per (query, key), and each op is a loop over keys."""
    n_ops = ops.shape[0]
    if n_ops == 1 and ops[0] == SELECT:  # one Select: a gather from its table
        base = pred_off[0] + qcodes[0, b, q]
        step = pred_nq[0]
        kc = kcodes[0, b]
        for k in range(stop):
            row[k] = pred[base + kc[k] * step]
        return
    for k in range(stop):
        row[k] = 0  # 1 where a predicate raised at key k
    for i in range(n_ops):
        op = ops[i]
        out = regs[i]
        if op == SELECT:
            leaf = a0[i]
            base = pred_off[leaf] + qcodes[leaf, b, q]
            step = pred_nq[leaf]
            kc = kcodes[leaf, b]
            for k in range(stop):
                v = pred[base + kc[k] * step]
                if v == PRED_ERROR:
                    row[k] = 1
                    v = PRED_FALSE
                out[k] = v
        elif op == CONST:
            c = cmats[a0[i], q]
            for k in range(stop):
                out[k] = c[k]
        elif op == AND:
            x = regs[a0[i]]
            y = regs[a1[i]]
            for k in range(stop):
                out[k] = x[k] & y[k]
        elif op == OR:
            x = regs[a0[i]]
            y = regs[a1[i]]
            for k in range(stop):
                out[k] = x[k] | y[k]
        else:  # NOT
            x = regs[a0[i]]
            for k in range(stop):
                out[k] = 1 - x[k]
    last = regs[n_ops - 1]
    for k in range(stop):
        row[k] = PRED_ERROR if row[k] else last[k]


@jit(helper=True)
def mean_code(total, count, denom, mean_values, mean_codes):
    """The exact mean ``total / (count * denom)`` and its code among the table's floats
    ``mean_values`` (sorted, codes ``mean_codes``), or `MEAN` when it is not there.

    Exact only when ``total`` and ``count * denom`` are at most 2**53 (`NumericInfo.fast`).
    """
    m = np.float64(total) / np.float64(count * denom)
    i = np.searchsorted(mean_values, m)
    if i < mean_values.shape[0] and mean_values[i] == m:
        return m, mean_codes[i]
    return m, MEAN


@jit(helper=True)
def reduce_row(row, stop, limit, vcodes, remap, kind, high, low, denom, exact, fast,
               default_code, mean_values, mean_codes, out, acc, b, q):
    """One query of an Aggregate, following `rasplang.evaluator.aggregate_row`, or of a
    SelectorWidth (``vcodes`` and every value argument None: numba compiles that case
    separately, with no value code); returns whether the sequence is an error.

    ``row[k]`` (``k < stop``) is the selector's value at key ``k`` (`PRED_ERROR` where a
    predicate raised); keys at or after ``limit`` are masked (causal). Writes ``out[b, q]``:
    the number of selected keys (SelectorWidth), else a code of the Aggregate's table,
    `REEVALUATE`, or `MEAN` with ``acc[b, q]`` = (count, high limb sum, low limb sum) of the
    exact scaled sum (`interpreter.tables.NumericInfo`) for the plan to divide.
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
        if s == PRED_FALSE:
            continue
        if s == PRED_ERROR:
            bad = True
            continue
        if k >= limit:
            continue
        count += 1
        if vcodes is None:
            continue
        c = vcodes[b, k]
        if count == 1:
            first = c
        elif c != first:
            same = False
        if kind[c] == NUMBER:
            hsum += high[c]
            lsum += low[c]
        else:
            allnum = False
    if vcodes is None:
        out[b, q] = count
        return bad
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
def fused_select_kernel(
    ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, may_error,
    lengths, causal, vcodes, remap, kind, high, low, denom, exact, fast,
    default_code, mean_values, mean_codes, out, acc, err,
):
    """Fused Select + Aggregate (`reduce_row`), or Select + SelectorWidth when ``vcodes``
    and the other value arguments are None.

    ``out[b, q]``: the number of selected keys, or a code of the Aggregate's table, or
    `MEAN` (an exact mean the table's floats ``mean_values`` (sorted, codes
    ``mean_codes``) do not hold, or that the kernel cannot divide exactly; its sums in
    ``acc[b, q]``), or `REEVALUATE` (see `interpreter.codes`).
    """
    n_batch, n_pos = out.shape
    regs = np.empty((ops.shape[0], n_pos), np.uint8)  # one row per op (`_fill_row`)
    row = np.empty(n_pos, np.int8)
    for b in range(n_batch):
        n = lengths[b]
        for q in range(n):
            stop = n if (may_error or not causal) else q + 1
            _fill_row(ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, b, q,
                      stop, regs, row)
            limit = q + 1 if causal else n
            if reduce_row(row, stop, limit, vcodes, remap, kind, high, low, denom, exact,
                          fast, default_code, mean_values, mean_codes, out, acc, b, q):
                err[b] = 1
        out[b, n:] = 0


@jit()
def selector_kernel(
    ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats, lengths, causal, out, err,
):
    """The selector matrix ``out[b, q, k]`` (only for selectors a caller asked for)."""
    regs = np.empty(ops.shape[0], np.uint8)
    for b in range(out.shape[0]):
        n = lengths[b]
        for q in range(n):
            for k in range(n):
                s = _selected(ops, a0, a1, kcodes, qcodes, pred, pred_off, pred_nq, cmats,
                              b, q, k, regs)
                if s == PRED_ERROR:
                    err[b] = 1
                    s = PRED_FALSE
                if causal and k > q:
                    s = PRED_FALSE
                out[b, q, k] = s
