"""The structured forward pass: a compiled model run the way it is built.

`rasplang.backend.structure.build` reads the model's structure off its weights once (a
`Structure`, cached on the model); `forward` runs it:

- the residual stream is column-major, ``x [d_model, N]`` with ``N = B * T``, so a
  residual dimension is one contiguous row and a sparse product is a list of
  vectorised row updates (`structured_kernels.axpy_rows`);
- embeddings and static reads are gathers from (token, position) tables;
- each head runs at its own size; its softmax runs keys first, one sequence at a time,
  in two numba kernels around numpy's vectorised ``exp``, so attention memory is one
  ``[B, T, T]`` buffer per head within the caller's chunk;
- each MLP component runs as one fused sparse kernel (`structured_kernels.mlp`), or as
  BLAS products when its weights are dense; a large dense product first counts its
  nonzero inputs and skips the zeros when they are nearly all zeros (one-hot values);
- a large batch is split over threads (the kernels release the GIL).

Results, residuals, sublayer outputs and attention patterns equal the dense forward's
(`rasplang.backend.forward`) to float rounding. ``kernels="numba"`` (numpy only) uses
the numba kernels; ``kernels="arrays"`` runs every step with array operations on ``xp``
(numpy or CuPy), the path CuPy and small batches take.
"""

from __future__ import annotations

import functools
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from rasplang.backend.structure import Emit, Folded, Head, Project, Structure, Unit, build

__all__ = ["Structure", "build", "forward"]

#: Multiply-adds (`Structure.cost`, ~1 ns each) from which `forward` splits the batch
#: over threads (below, starting them costs more than they save).
PARALLEL_WORK = 3 << 19
#: Positions (B * T) from which `forward` uses the numba kernels when not told (below,
#: array operations are as fast, and loading numba's cached kernels takes ~1 s once).
NUMBA_POSITIONS = 1 << 10
#: A dense product with at least this many weights first counts the nonzero inputs; if
#: at most 1 / `ZERO_SKIP` of them are nonzero, it skips the zeros instead of using BLAS.
ZERO_SKIP_SIZE = 4096
ZERO_SKIP = 32


def forward(s: Structure, ids: Any, xp: Any = np, keep: bool = False, kernels: str = "auto",
            threads: int | None = None) -> tuple[Any, dict[str, list[Any]]]:
    """Logits ``[B, T, d_vocab_out]`` for ``ids [B, T]``, and with ``keep`` the trace that
    `rasplang.backend.forward.forward` returns (residuals, sublayer outputs, attention
    patterns and their logits, each ``[B, ...]``), equal to its results to float rounding.

    ``s`` must be on ``xp`` (`Structure.to`). ``kernels="numba"`` runs the numba kernels
    (numpy only); ``"arrays"`` runs array operations on ``xp``; ``"auto"`` the numba
    kernels on numpy from `NUMBA_POSITIONS` positions (``B * T``) on, so that a few
    sequences (``apply``, one ``run``) never wait for numba to load. The numba kernels
    release the GIL: without ``keep``, a batch whose `Structure.cost` reaches
    `PARALLEL_WORK` is split over ``threads`` threads (default: the CPUs this process
    may use).
    """
    B, T = ids.shape
    if kernels == "auto":
        kernels = "numba" if B * T >= NUMBA_POSITIONS else "arrays"
    numba = kernels == "numba" and xp is np
    threads = min(B, threads or _cpus())
    if numba and not keep and threads > 1 and s.cost(B, T) >= PARALLEL_WORK:
        first, *rest = itertools.pairwise(B * i // threads for i in range(threads + 1))
        parts = [_pool(threads).submit(forward, s, ids[lo:hi], xp, False, kernels, 1)
                 for lo, hi in rest]
        logits = forward(s, ids[first[0]:first[1]], xp, False, kernels, 1)[0]
        return np.concatenate([logits, *(part.result()[0] for part in parts)]), _trace()
    ops = _Numba(xp) if numba else _Arrays(xp)
    n = B * T
    key = (ids * s.n_ctx + xp.arange(T)).reshape(n)                # (N,) table index
    valid = ids != s.pad_id                                         # (B, T) visible keys
    x = xp.zeros((s.d_model, n), dtype=s.W_E.dtype)                 # (d_model, N)
    read = slice(None) if keep else s.read_embed                    # what is read of it
    cols, w_e, w_pos = s.embed_cols[read], s.W_E[:, read], s.W_pos[:T, read]
    if len(cols):
        x[cols] = (w_e[ids] + w_pos).reshape(n, -1).T
    trace = _trace()
    if keep:
        trace["residuals"].append(_rows(xp, x, B, T))
    for layer in s.sublayers:
        out = x if layer.in_place and not keep else xp.zeros_like(x)
        if layer.attention:
            patterns, logits = [], []
            for head in layer.steps:
                if head.writes or keep:
                    got = ops.head(s, head, x, out, key, valid, B, T, keep)
                    patterns.append(got[0])
                    logits.append(got[1])
            if keep:
                trace["attention"].append(xp.stack(patterns, axis=1))   # (B, H, T, T)
                trace["attn_logits"].append(xp.stack(logits, axis=1))
        else:
            for step in layer.steps:
                if isinstance(step, Folded):
                    if step.needed or keep:
                        ops.fold(step, key, out)
                else:
                    ops.unit(step, x, key, out)
        if len(layer.bias_cols):
            out[layer.bias_cols] += layer.bias[:, None]
        if keep:
            x = x + out
            trace["layer_outputs"].append(_rows(xp, out, B, T))
            trace["residuals"].append(_rows(xp, x, B, T))
        elif out is not x:
            x += out
    logits_t = ops.project(s.unembed, x, key)                         # (d_vocab_out, N)
    return logits_t.T.reshape(B, T, -1), trace


def _trace() -> dict[str, list[Any]]:
    return {"residuals": [], "layer_outputs": [], "attention": [], "attn_logits": []}


def _cpus() -> int:
    """CPUs this process may run on."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, n or 1)


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """The thread pool `forward` splits large batches over (one per size, kept)."""
    return ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="rasplang-forward")


def _rows(xp: Any, x: Any, B: int, T: int) -> Any:
    """A column-major residual ``[d, B*T]`` as a new ``[B, T, d]`` array."""
    return xp.ascontiguousarray(x.T).reshape(B, T, -1)


class _Arrays:
    """Each step as array operations on ``xp``: dense products of the rows read."""

    def __init__(self, xp: Any):
        self.xp = xp

    def project(self, p: Project, x: Any, key: Any) -> Any:
        """``y [m, N]`` for `Project` ``p``."""
        if p.table is not None:
            return self.xp.take(p.table, key, axis=1)
        y = p.weight.T @ x[p.rows]
        if p.bias is not None:
            y += p.bias[:, None]
        return y

    def emit(self, e: Emit, y: Any, out: Any) -> None:
        """``out[e.cols] += e.weight.T @ y``."""
        out[e.cols] += e.weight.T @ y

    def fold(self, f: Folded, key: Any, out: Any) -> None:
        """``out[f.cols] += f.table[:, key]``."""
        out[f.cols] += self.xp.take(f.table, key, axis=1)

    def unit(self, u: Unit, x: Any, key: Any, out: Any) -> None:
        """``out[u.out.cols] += W_out.T @ relu(W_in.T @ x + b_in)``."""
        y = self.project(u.inp, x, key)                                # (units, N)
        self.emit(u.out, self.xp.maximum(y, 0, out=y), out)

    def scores(self, s: Structure, head: Head, x: Any, key: Any, B: int, T: int) -> Any:
        """The head's scores ``[B, T, T]`` divided by ``attn_scale``."""
        if head.scores is not None:
            k = key.reshape(B, T)
            return head.scores[k[:, None, :], k[:, :, None]]
        q, k = self.project(head.q, x, key), self.project(head.k, x, key)   # (E, N)
        e = q.shape[0]
        return q.T.reshape(B, T, e) @ k.T.reshape(B, T, e).transpose(0, 2, 1) / s.scale

    def head(self, s: Structure, head: Head, x: Any, out: Any, key: Any, valid: Any,
             B: int, T: int, keep: bool) -> tuple[Any, Any]:
        """Add the head's output to ``out``; its pattern and logits ``[B, T, T]``."""
        xp = self.xp
        visible = valid[:, None, :]                                    # (B, 1, T)
        if s.causal:
            visible = visible & xp.tril(xp.ones((T, T), dtype=bool))  # (B, T, T)
        logits = xp.where(visible, self.scores(s, head, x, key, B, T), -xp.inf)
        scores = logits - logits.max(axis=-1, keepdims=True)
        pattern = xp.exp(scores)
        pattern /= pattern.sum(axis=-1, keepdims=True)
        if head.writes:
            v = self.project(head.v, x, key)                           # (E, N)
            z = pattern @ v.T.reshape(B, T, -1)                         # (B, T, E)
            self.emit(head.o, z.reshape(B * T, -1).T, out)
        return pattern, logits


class _Numba(_Arrays):
    """The numba kernels: sparse products, gathered scores, the fused softmax."""

    def project(self, p: Project, x: Any, key: Any) -> Any:
        if p.table is not None:
            y = np.zeros((len(p.table), len(key)), dtype=x.dtype)
            _kernels().take_rows(p.table, key, y, np.arange(len(y)))
            return y
        if not p.sparse:
            if p.weight.size < ZERO_SKIP_SIZE:
                return super().project(p, x, key)
            xr = x[p.rows]                                             # (rows, N)
            if np.count_nonzero(xr) * ZERO_SKIP > xr.size:
                y = p.weight.T @ xr
            else:
                y = np.empty((p.weight.shape[1], x.shape[1]), dtype=x.dtype)
                _kernels().nonzero_product(xr, p.weight, y)
            if p.bias is not None:
                y += p.bias[:, None]
            return y
        y = np.zeros((p.weight.shape[1], x.shape[1]), dtype=x.dtype)
        if p.bias is not None:
            y += p.bias[:, None]
        _kernels().axpy_rows(x, p.coo[0], y, p.coo[1], p.coo[2])
        return y

    def fold(self, f: Folded, key: Any, out: Any) -> None:
        _kernels().take_rows(f.table, key, out, f.cols)

    def unit(self, u: Unit, x: Any, key: Any, out: Any) -> None:
        if not u.fused or u.inp.table is not None:
            super().unit(u, x, key, out)
            return
        bias = u.inp.bias if u.inp.bias is not None else np.zeros(len(u.out.weight), x.dtype)
        _kernels().mlp(x, *u.inp.coo, bias, *u.out.coo, out)

    def emit(self, e: Emit, y: Any, out: Any) -> None:
        if not e.sparse:
            super().emit(e, y, out)
        else:
            _kernels().axpy_rows(y, e.coo[0], out, e.coo[1], e.coo[2])

    def head(self, s: Structure, head: Head, x: Any, out: Any, key: Any, valid: Any,
             B: int, T: int, keep: bool) -> tuple[Any, Any]:
        empty = np.empty((0, 0), x.dtype)
        if head.scores is None:
            q, k, table = self.project(head.q, x, key), self.project(head.k, x, key), empty
        else:
            q = k = empty
            table = head.scores
        kernels = _kernels()
        shifted = np.empty((B, T, T), x.dtype)                         # (B, keys, queries)
        shape = (B, T, T) if keep else (0, 0, 0)
        logits, pattern = np.empty(shape, x.dtype), np.empty(shape, x.dtype)
        kernels.shifted_scores(q, k, s.scale, table, key.reshape(B, T), valid, s.causal,
                               shifted, logits)
        np.exp(shifted, out=shifted)
        v = self.project(head.v, x, key) if head.writes else np.zeros((0, B * T), x.dtype)
        z = np.empty_like(v)
        kernels.weigh(shifted, np.ascontiguousarray(v), z, pattern)
        if head.writes:
            self.emit(head.o, z, out)
        return pattern.transpose(0, 2, 1), logits.transpose(0, 2, 1)


def _kernels() -> Any:
    from rasplang.backend import structured_kernels

    return structured_kernels
