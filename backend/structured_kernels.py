"""numba kernels of the structured forward pass (`rasplang.backend.structured`).

The residual stream is column-major here: ``x [d_model, N]`` with ``N = B * T``, so a
residual dimension is one contiguous row and a sparse product is a list of
vectorised row updates ``dst[d] += w * src[s]``. Every kernel is generic (table
driven), compiled once per dtype through the project's one JIT helper, and exact to
float rounding against the dense forward (`rasplang.backend.forward`): it performs
the same arithmetic, skipping only terms that are exactly zero.
"""

from __future__ import annotations

import numpy as np

from rasplang.interpreter._jit import jit

#: Columns of the residual one thread updates at a time in `axpy_rows` (fits in L1/L2).
CHUNK = 1024
#: Positions `nonzero_product` accumulates before transposing them into its output.
BLOCK = 64


@jit()
def axpy_rows(src, src_idx, dst, dst_idx, val):  # pragma: no cover - compiled
    """``dst[dst_idx[k]] += val[k] * src[src_idx[k]]`` for every nonzero ``k`` of a
    sparse matrix: ``src [m, N]``, ``dst [n, N]`` (a sparse ``W.T @ src``)."""
    n = src.shape[1]
    for c in range((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        hi = min(n, lo + CHUNK)
        for k in range(val.size):
            d_row = dst[dst_idx[k], lo:hi]  # row slices: a loop from 0 that LLVM vectorises
            s_row = src[src_idx[k], lo:hi]
            w = val[k]
            for j in range(d_row.size):
                d_row[j] += w * s_row[j]


@jit()
def nonzero_product(xr, weight, out):  # pragma: no cover - compiled
    """``out[:, n] = weight.T @ xr[:, n]`` over the nonzero entries of ``xr [r, N]``
    only (``weight [r, m]``, ``out [m, N]``): a dense product whose inputs are mostly
    exact zeros (one-hot categorical values) costs their nonzeros, not ``r * m``.
    Positions go in blocks of `BLOCK`, accumulated position-major, then transposed."""
    m = weight.shape[1]
    block = np.empty((BLOCK, m), dtype=out.dtype)
    for lo in range(0, xr.shape[1], BLOCK):
        hi = min(xr.shape[1], lo + BLOCK)
        block[:] = 0
        for t in range(hi - lo):
            for a in range(xr.shape[0]):
                v = xr[a, lo + t]
                if v != 0:
                    for e in range(m):
                        block[t, e] += v * weight[a, e]
        for e in range(m):
            for t in range(hi - lo):
                out[e, lo + t] = block[t, e]


@jit()
def mlp(x, in_src, in_dst, in_val, bias, out_src, out_dst, out_val, dst):  # pragma: no cover
    """``dst += W_out.T @ relu(W_in.T @ x + bias)`` for one MLP component, sparse,
    a chunk of positions at a time so the hidden units ``[U, CHUNK]`` stay in cache:
    ``W_in`` as (residual row, unit, value) triples, ``W_out`` as (unit, residual row,
    value); ``x [d_model, N]``, ``dst [d_model, N]`` (``dst`` may be ``x``: every unit
    of a chunk is computed before anything is written)."""
    n = x.shape[1]
    hidden = np.empty((bias.size, CHUNK), dtype=x.dtype)
    for c in range((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        hi = min(n, lo + CHUNK)
        h = hidden[:, :hi - lo]
        for u in range(bias.size):
            h[u] = bias[u]
        for k in range(in_val.size):
            h_row = h[in_dst[k]]
            x_row = x[in_src[k], lo:hi]
            w = in_val[k]
            for j in range(h_row.size):
                h_row[j] += w * x_row[j]
        for u in range(bias.size):
            h_row = h[u]
            for j in range(h_row.size):
                if h_row[j] < 0:
                    h_row[j] = 0
        for k in range(out_val.size):
            h_row = h[out_src[k]]
            d_row = dst[out_dst[k], lo:hi]
            w = out_val[k]
            for j in range(h_row.size):
                d_row[j] += w * h_row[j]


@jit()
def take_rows(table, key, dst, dst_idx):  # pragma: no cover - compiled
    """``dst[dst_idx[r]] += table[r, key]``: a static table's rows gathered at each
    position's (token, position) ``key [N]`` (``table [m, keys]``, ``dst [n, N]``)."""
    for r in range(table.shape[0]):
        row = table[r]
        out = dst[dst_idx[r]]
        for j in range(key.size):
            out[j] += row[key[j]]


@jit()
def shifted_scores(q, k, scale, table, key, valid, causal, out, logits):  # pragma: no cover
    """The first half of one head's softmax, keys first: ``out[b, j, i]`` is query
    ``i``'s score of key ``j`` minus the query's largest visible score, ``-inf`` where
    key ``j`` is hidden (PAD, or after ``i`` when ``causal``). A score is ``q_i . k_j /
    scale`` (``q``, ``k`` ``[E, B*T]``) or, when ``table`` is not empty,
    ``table[key[b, j], key[b, i]]`` (a head whose queries and keys are functions of token
    and position, ``key [B, T]``). With ``logits`` ``[B, T, T]`` (not empty), also the
    masked scores, keys first. Keys first, every inner loop runs over the queries of
    one sequence: contiguous and vectorised.
    """
    n_batch, n_pos = valid.shape
    keep = logits.shape[0] > 0
    from_table = table.shape[0] > 0
    m = np.empty(n_pos, dtype=out.dtype)
    for b in range(n_batch):  # no array views in the loops: each costs atomic refcounts
        start = b * n_pos
        for j in range(n_pos):
            if not valid[b, j]:
                for i in range(n_pos):
                    out[b, j, i] = -np.inf
                continue
            if from_table:
                kj = key[b, j]
                for i in range(n_pos):
                    out[b, j, i] = table[kj, key[b, i]]
            else:
                for i in range(n_pos):
                    out[b, j, i] = 0
                for e in range(q.shape[0]):
                    w = k[e, start + j]
                    if w != 0:
                        for i in range(n_pos):
                            out[b, j, i] += w * q[e, start + i]
                for i in range(n_pos):
                    out[b, j, i] /= scale
            if causal:
                for i in range(j):
                    out[b, j, i] = -np.inf
        for i in range(n_pos):
            m[i] = -np.inf
        for j in range(n_pos):
            for i in range(n_pos):
                m[i] = max(m[i], out[b, j, i])
        for j in range(n_pos):
            for i in range(n_pos):
                if keep:
                    logits[b, j, i] = out[b, j, i]
                out[b, j, i] -= m[i]


@jit()
def weigh(e, v, z, pattern):  # pragma: no cover - compiled
    """The second half: with ``e [B, T, T]`` the exponentials of `shifted_scores` (keys
    first), the pattern ``e / e.sum(keys)`` weighs the values ``v [E, B*T]`` into
    ``z [E, B*T]``; ``pattern`` ``[B, T, T]`` (keys first, not empty) receives it.
    Values that are exactly zero are skipped."""
    n_batch, n_pos, _ = e.shape
    keep = pattern.shape[0] > 0
    total = np.empty(n_pos, dtype=e.dtype)
    acc = np.empty(n_pos, dtype=e.dtype)
    for b in range(n_batch):
        start = b * n_pos
        for i in range(n_pos):
            total[i] = 0
        for j in range(n_pos):
            for i in range(n_pos):
                total[i] += e[b, j, i]
        for f in range(v.shape[0]):
            for i in range(n_pos):
                acc[i] = 0
            for j in range(n_pos):
                w = v[f, start + j]
                if w != 0:
                    for i in range(n_pos):
                        acc[i] += w * e[b, j, i]
            for i in range(n_pos):
                z[f, start + i] = acc[i] / total[i]
        if keep:
            for j in range(n_pos):
                for i in range(n_pos):
                    pattern[b, j, i] = e[b, j, i] / total[i]
