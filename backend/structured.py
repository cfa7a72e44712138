"""The structured forward pass: a compiled model run the way it is built.

A compiled model is more than 99% zeros: each head and each MLP reads a few residual
dimensions and writes a few others. `build` reads that structure off the
TransformerLens-layout weights once (nothing here depends on how they were compiled, so
loaded models work too) and `forward` runs it:

- the residual stream is column-major, ``x [d_model, N]`` with ``N = B * T``, so a
  residual dimension is one contiguous row;
- each head runs at its own size: only the query-key dimensions where both ``W_Q`` and
  ``W_K`` are nonzero, only the value-output dimensions where ``W_V`` and ``W_O`` are;
- each MLP runs as its connected components (units linked by a shared input row or
  output column), each at its own size, units that write nothing dropped;
- a matrix whose density is below `SPARSE_DENSITY` runs as a sparse product
  (`structured_kernels.axpy_rows`), a denser one as a BLAS product of the rows it reads;
- residual dimensions that are functions of (token, position) alone -- the embedding,
  and the outputs of MLP components that read only such dimensions -- are *static*: a
  static read is a gather from a table over every (token, position) pair, an MLP
  component that reads only static dimensions is one gathered table, and a head whose
  queries and keys are static gathers its scores from a ``[keys, keys]`` table;
- in place: a sublayer adds into the residual unless it reads what it writes.

Every step performs the dense forward's arithmetic (`rasplang.backend.forward`) up to
the order of sums and terms that are exactly zero, so the results, the residuals, the
sublayer outputs and the attention patterns equal the dense forward's to float rounding.
`kernels="numba"` (numpy only) uses the numba kernels; `kernels="arrays"` runs every
step with array operations on ``xp`` (numpy or CuPy), the path CuPy takes.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

#: A weight matrix with fewer nonzeros than this fraction of its entries runs sparse.
SPARSE_DENSITY = 0.3
#: Largest static table (entries): the key residual ``[keys, d_model]`` and each table.
MAX_TABLE = 2**23


@attrs.frozen(eq=False)
class Project:
    """Residual -> ``m`` local rows: ``y [m, N] = weight.T @ x[rows] + bias[:, None]``.

    ``weight [len(rows), m]`` holds the nonzero rows of the layer's weight; ``coo``
    (``src``, ``dst``, ``val``: global residual row, local row, value) its nonzeros when
    it runs sparse, else None; ``table [m, keys]`` its value per (token, position) when
    every row read is static (``y = table[:, key]``), else None.
    """

    rows: Any
    weight: Any
    bias: Any
    coo: tuple[Any, Any, Any] | None
    table: Any

    @property
    def reads(self) -> Any:
        """The residual dimensions this reads from the residual stream (none with a table)."""
        return self.rows if self.table is None else self.rows[:0]


@attrs.frozen(eq=False)
class Emit:
    """Local rows -> residual: ``x[cols] += weight.T @ y`` (``weight [m, len(cols)]``);
    ``coo`` (local row, global residual row, value) when it runs sparse."""

    cols: Any
    weight: Any
    coo: tuple[Any, Any, Any] | None


@attrs.frozen(eq=False)
class Head:
    """One attention head: ``scores[key of the key, key of the query]`` (keys first,
    already divided by ``attn_scale``) when its queries and keys are static, else None
    and computed from ``q`` and ``k``.
    ``writes`` is False for a head whose value-output path is zero (its pattern is
    still reported by ``keep``)."""

    index: int
    q: Project
    k: Project
    v: Project
    o: Emit
    scores: Any
    writes: bool


@attrs.frozen(eq=False)
class Unit:
    """One connected component of an MLP: ``x[out.cols] += W_out.T @ relu(inp(x))``."""

    inp: Project
    out: Emit


@attrs.frozen(eq=False)
class Folded:
    """An MLP component that reads only static dimensions: ``x[cols] += table[:, key]``.
    ``needed`` is False when no later step reads ``cols`` from the residual stream, so
    the step only runs when the residual stream itself is kept."""

    cols: Any
    table: Any
    needed: bool = True


@attrs.frozen(eq=False)
class Sublayer:
    """An attention (steps are `Head`) or MLP (`Unit`, `Folded`) sublayer; ``bias`` the
    nonzero entries of ``b_O``/``b_out`` at ``bias_cols``; ``in_place`` when no step
    reads a dimension the sublayer writes."""

    attention: bool
    steps: tuple[Any, ...]
    bias_cols: Any
    bias: Any
    in_place: bool


@attrs.frozen(eq=False)
class Structure:
    """A model's structure for one dtype: the embedding restricted to the dimensions it
    writes (``embed_cols``; ``read_embed`` marks those a step reads from the residual
    stream), the sublayers, the unembedding, and the conventions of
    `rasplang.backend.forward` (``n_ctx``, ``pad_id``, ``causal``, ``scale``).
    Static tables are indexed by ``key = token_id * n_ctx + position``."""

    d_model: int
    n_ctx: int
    n_heads: int
    pad_id: int
    causal: bool
    scale: float
    embed_cols: Any
    W_E: Any
    W_pos: Any
    sublayers: tuple[Sublayer, ...]
    unembed: Project
    read_embed: Any

    def to(self, xp: Any) -> Structure:
        """This structure with every array on ``xp`` (numpy or CuPy)."""
        return _convert(self, xp)


# ------------------------------------------------------------------------ building


class _Static:
    """The residual stream of every (token, position) pair, ``xs [keys, d_model]``, and
    which dimensions are still functions of (token, position) alone (``static``)."""

    def __init__(self, w: dict[str, np.ndarray], n_ctx: int, dtype: Any):
        d_vocab, d_model = w["embed.W_E"].shape
        self.static = np.ones(d_model, dtype=bool)
        self.xs = None
        if d_vocab * n_ctx * d_model <= MAX_TABLE:  # (token, position) -> residual row
            self.xs = (w["embed.W_E"][:, None, :] + w["pos_embed.W_pos"][None, :n_ctx]
                       ).reshape(d_vocab * n_ctx, d_model).astype(dtype)

    def reads_static(self, rows: np.ndarray) -> bool:
        return self.xs is not None and bool(self.static[rows].all())


def _project(w: np.ndarray, b: np.ndarray, st: _Static) -> Project:
    """`Project` for a weight ``w [d_model, m]`` and bias ``b [m]``."""
    rows = np.flatnonzero((w != 0).any(axis=1))
    weight = np.ascontiguousarray(w[rows])
    table = None
    if st.reads_static(rows) and weight.shape[1] * len(st.xs) <= MAX_TABLE:
        table = np.ascontiguousarray((st.xs[:, rows] @ weight + b).T)  # (m, keys)
    bias = np.ascontiguousarray(b) if b.any() else None
    return Project(rows, weight, bias, _coo(weight, rows, None), table)


def _emit(w: np.ndarray) -> Emit:
    """`Emit` for a weight ``w [m, d_model]`` (local rows -> residual)."""
    cols = np.flatnonzero((w != 0).any(axis=0))
    weight = np.ascontiguousarray(w[:, cols])
    return Emit(cols, weight, _coo(weight, None, cols))


def _coo(weight: np.ndarray, rows: Any, cols: Any) -> tuple[Any, Any, Any] | None:
    """The nonzeros of ``weight`` as (source row, destination row, value), with rows or
    columns mapped to residual dimensions; None when it is dense enough for BLAS."""
    r, c = np.nonzero(weight)
    if len(r) >= SPARSE_DENSITY * weight.size:
        return None
    src = rows[r] if rows is not None else r
    dst = cols[c] if cols is not None else c
    return src.astype(np.int64), dst.astype(np.int64), np.ascontiguousarray(weight[r, c])


def _attention(w: dict[str, np.ndarray], p: str, st: _Static, scale: float) -> Sublayer:
    """The heads of ``blocks.{i}.attn`` (every head, even empty ones, for ``keep``)."""
    heads, written, read = [], set(), set()
    for h in range(w[p + "W_Q"].shape[0]):
        wq, wk, wv, wo = (w[p + f"W_{n}"][h] for n in "QKVO")
        bq, bk, bv = (w[p + f"b_{n}"][h] for n in "QKV")
        qk = (((wq != 0).any(axis=0) | (bq != 0))      # q_e * k_e is zero unless both
              & ((wk != 0).any(axis=0) | (bk != 0)))   # the query and the key use e
        ov = ((wv != 0).any(axis=0) | (bv != 0)) & (wo != 0).any(axis=1)
        q, k = _project(wq[:, qk], bq[qk], st), _project(wk[:, qk], bk[qk], st)
        v, o = _project(wv[:, ov], bv[ov], st), _emit(wo[ov])
        scores = None
        if q.table is not None and k.table is not None and len(st.xs) ** 2 <= MAX_TABLE:
            scores = np.ascontiguousarray((q.table.T @ k.table / scale).T)  # (keys, keys)
        writes = bool(ov.any())
        heads.append(Head(h, q, k, v, o, scores, writes))
        if writes:
            written.update(o.cols.tolist())
            read.update(np.concatenate([q.rows, k.rows, v.rows]).tolist())
    bias_cols = np.flatnonzero(w[p + "b_O"])
    if st.xs is not None:
        st.xs[:, bias_cols] += w[p + "b_O"][bias_cols]
    st.static[sorted(written)] = False
    return Sublayer(True, tuple(heads), bias_cols, w[p + "b_O"][bias_cols],
                    not written & read)


def _mlp(w: dict[str, np.ndarray], p: str, st: _Static) -> Sublayer:
    """The connected components of ``blocks.{i}.mlp``, folded into tables where static."""
    w_in, b_in, w_out = w[p + "W_in"], w[p + "b_in"], w[p + "W_out"]
    units = np.flatnonzero(((w_in != 0).any(axis=0) | (b_in != 0)) & (w_out != 0).any(axis=1))
    steps, updates, dynamic, read = [], [], [], set()
    for group in _components(w_in[:, units] != 0, w_out[units] != 0):
        u = units[group]
        inp, out = _project(w_in[:, u], b_in[u], st), _emit(w_out[u])
        if inp.table is not None and len(out.cols) * len(st.xs) <= MAX_TABLE:
            table = np.ascontiguousarray(out.weight.T @ np.maximum(inp.table, 0))  # (C, keys)
            steps.append(Folded(out.cols, table))
            updates.append((out.cols, table))
        else:
            steps.append(Unit(inp, out))
            dynamic.append(out.cols)
            read.update(inp.rows.tolist())
    bias_cols = np.flatnonzero(w[p + "b_out"])
    for cols, table in updates:
        st.xs[:, cols] += table.T
    if st.xs is not None:
        st.xs[:, bias_cols] += w[p + "b_out"][bias_cols]
    written = set(np.concatenate([s.cols if isinstance(s, Folded) else s.out.cols
                                  for s in steps] or [np.zeros(0, int)]).tolist())
    for cols in dynamic:
        st.static[cols] = False
    return Sublayer(False, tuple(steps), bias_cols, w[p + "b_out"][bias_cols],
                    not written & read)


def _components(reads: np.ndarray, writes: np.ndarray) -> list[np.ndarray]:
    """Units (columns of ``reads [d_model, U]``, rows of ``writes [U, d_model]``) grouped
    into connected components: two units meet when they share an input row or an output
    column. Label propagation with pointer jumping over the (dimension, unit) pairs."""
    r_dim, r_unit = np.nonzero(reads)
    w_unit, w_dim = np.nonzero(writes)
    dim = np.concatenate([r_dim, w_dim + reads.shape[0]])  # inputs, then outputs
    unit = np.concatenate([r_unit, w_unit])
    label = np.arange(reads.shape[1])
    while True:
        per_dim = np.full(2 * reads.shape[0], len(label))
        np.minimum.at(per_dim, dim, label[unit])       # the smallest unit at each dimension
        new = label.copy()
        np.minimum.at(new, unit, per_dim[dim])         # ... reaches every unit there
        new = new[new]
        if np.array_equal(new, label):
            return [np.flatnonzero(label == g) for g in np.unique(label)]
        label = new


def build(weights: dict[str, np.ndarray], cfg: Any, dtype: Any) -> Structure:
    """The structure of a model with TransformerLens-layout ``weights`` and config
    ``cfg`` (a `ModelConfig`), in ``dtype``, on numpy."""
    w = {k: np.asarray(v, dtype=dtype) for k, v in weights.items()}
    scale = np.dtype(dtype).type(cfg.attn_scale)
    st = _Static(w, cfg.n_ctx, dtype)
    embed_cols = np.flatnonzero((w["embed.W_E"] != 0).any(axis=0)
                                | (w["pos_embed.W_pos"] != 0).any(axis=0))
    sublayers = []
    for i in range(cfg.n_layers):
        sublayers.append(_attention(w, f"blocks.{i}.attn.", st, scale))
        sublayers.append(_mlp(w, f"blocks.{i}.mlp.", st))
    unembed = _project(w["unembed.W_U"], w["unembed.b_U"], st)
    read = np.zeros(cfg.d_model, dtype=bool)  # dimensions some step reads from x
    read[unembed.reads] = True
    for layer in sublayers:
        for step in layer.steps:
            if isinstance(step, Head) and step.writes:
                read[step.v.reads] = True
                if step.scores is None:
                    read[step.q.reads] = read[step.k.reads] = True
            elif isinstance(step, Unit):
                read[step.inp.reads] = True
    sublayers = [attrs.evolve(layer, steps=tuple(
        attrs.evolve(step, needed=bool(read[step.cols].any())) if isinstance(step, Folded)
        else step for step in layer.steps)) for layer in sublayers]
    return Structure(cfg.d_model, cfg.n_ctx, cfg.n_heads, cfg.pad_id, bool(cfg.causal), scale,
                     embed_cols, np.ascontiguousarray(w["embed.W_E"][:, embed_cols]),
                     np.ascontiguousarray(w["pos_embed.W_pos"][:, embed_cols]),
                     tuple(sublayers), unembed, read[embed_cols])


def _convert(obj: Any, xp: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return xp.asarray(obj)
    if isinstance(obj, tuple):
        return tuple(_convert(o, xp) for o in obj)
    if attrs.has(type(obj)):
        return attrs.evolve(obj, **{f.name: _convert(getattr(obj, f.name), xp)
                                    for f in attrs.fields(type(obj))})
    return obj


# ------------------------------------------------------------------------ running


def forward(s: Structure, ids: Any, xp: Any = np, keep: bool = False, kernels: str = "numba",
            ) -> tuple[Any, dict[str, list[Any]]]:
    """Logits ``[B, T, d_vocab_out]`` for ``ids [B, T]``, and with ``keep`` the trace that
    `rasplang.backend.forward.forward` returns (residuals, sublayer outputs, attention
    patterns and their logits, each ``[B, ...]``), equal to its results to float rounding.

    ``s`` must be on ``xp`` (`Structure.to`). ``kernels="numba"`` runs the numba kernels
    (numpy only); ``"arrays"`` runs array operations on ``xp``.
    """
    ops = _Numba(xp) if kernels == "numba" and xp is np else _Arrays(xp)
    B, T = ids.shape
    n = B * T
    key = (ids * s.n_ctx + xp.arange(T)).reshape(n)                # (N,) table index
    valid = ids != s.pad_id                                         # (B, T) visible keys
    x = xp.zeros((s.d_model, n), dtype=s.W_E.dtype)                 # (d_model, N)
    embed = slice(None) if keep else s.read_embed                   # what is read of it
    x[s.embed_cols[embed]] = (s.W_E[ids][..., embed] + s.W_pos[:T, embed]).reshape(n, -1).T
    trace: dict[str, list[Any]] = {"residuals": [], "layer_outputs": [], "attention": [],
                                   "attn_logits": []}
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
                    y = ops.project(step.inp, x, key)                  # (units, N)
                    ops.emit(step.out, xp.maximum(y, 0, out=y), out)
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
        if p.coo is None:
            return super().project(p, x, key)
        y = np.zeros((p.weight.shape[1], x.shape[1]), dtype=x.dtype)
        if p.bias is not None:
            y += p.bias[:, None]
        _kernels().axpy_rows(x, p.coo[0], y, p.coo[1], p.coo[2])
        return y

    def fold(self, f: Folded, key: Any, out: Any) -> None:
        _kernels().take_rows(f.table, key, out, f.cols)

    def emit(self, e: Emit, y: Any, out: Any) -> None:
        if e.coo is None:
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
