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
CHUNK = 2048


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
    for b in range(n_batch):
        start = b * n_pos
        keys = key[b]
        for j in range(n_pos):
            row = out[b, j]
            if not valid[b, j]:
                row[:] = -np.inf
                continue
            if from_table:
                scored = table[keys[j]]
                for i in range(n_pos):
                    row[i] = scored[keys[i]]
            else:
                row[:] = 0
                for e in range(q.shape[0]):
                    w = k[e, start + j]
                    if w != 0:
                        queries = q[e, start:start + n_pos]
                        for i in range(n_pos):
                            row[i] += w * queries[i]
                for i in range(n_pos):
                    row[i] /= scale
            if causal:
                row[:j] = -np.inf
        m[:] = -np.inf
        for j in range(n_pos):
            row = out[b, j]
            for i in range(n_pos):
                m[i] = max(m[i], row[i])
        if keep:
            logits[b] = out[b]
        for j in range(n_pos):
            row = out[b, j]
            for i in range(n_pos):
                row[i] -= m[i]


@jit()
def weigh(e, v, z, pattern):  # pragma: no cover - compiled
    """The second half: with ``e [B, T, T]`` the exponentials of `shifted_scores` (keys
    first), the pattern ``e / e.sum(keys)`` weighs the values ``v [E, B*T]`` into
    ``z [E, B*T]``; ``pattern`` ``[B, T, T]`` (keys first, not empty) receives it."""
    n_batch, n_pos, _ = e.shape
    n_val = v.shape[0]
    keep = pattern.shape[0] > 0
    total = np.empty(n_pos, dtype=e.dtype)
    for b in range(n_batch):
        start = b * n_pos
        total[:] = 0
        for j in range(n_pos):
            row = e[b, j]
            for i in range(n_pos):
                total[i] += row[i]
        for f in range(n_val):
            acc = z[f, start:start + n_pos]
            acc[:] = 0
            for j in range(n_pos):
                w = v[f, start + j]
                row = e[b, j]
                for i in range(n_pos):
                    acc[i] += w * row[i]
            for i in range(n_pos):
                acc[i] /= total[i]
        if keep:
            for j in range(n_pos):
                pattern[b, j] = e[b, j] / total
