"""The structure of a compiled model, read off its weights once: what the structured
forward pass (`rasplang.backend.structured`) runs.

A compiled model is more than 99% zeros: each head and each MLP reads a few residual
dimensions and writes a few others. `build` reads that structure off the
TransformerLens-layout weights (nothing here depends on how they were compiled, so
loaded models work too):

- each head keeps only the query-key dimensions where both ``W_Q`` and ``W_K`` are
  nonzero and the value-output dimensions where ``W_V`` and ``W_O`` are;
- each MLP splits into its connected components (units linked by a shared input row or
  output column), units that write nothing dropped;
- every product keeps the residual rows it reads and its nonzeros, and runs sparse when
  its density is below `SPARSE_DENSITY` (or it is thinner than `MIN_DENSE`);
- residual dimensions that are functions of (token, position) alone -- the embedding,
  and the outputs of MLP components that read only such dimensions -- are *static*: a
  product that reads only static dimensions becomes a table over every (token,
  position) pair, an MLP component that reads only static dimensions one such table
  (`Folded`), and a head whose queries and keys are static a ``[keys, keys]`` table of
  its scores;
- a sublayer that reads nothing it writes adds into the residual stream in place, and
  dimensions that no step reads from the residual stream are not written there when
  the stream itself is not kept.

Each table and product performs the dense forward's arithmetic (`rasplang.backend.forward`)
up to the order of sums and terms that are exactly zero.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

#: A weight matrix with fewer nonzeros than this fraction of its entries runs sparse,
SPARSE_DENSITY = 0.3
#: ... and so does one with fewer rows or columns than this (BLAS is memory-bound there).
MIN_DENSE = 8
#: Largest static table (entries): the key residual ``[keys, d_model]`` and each table,
MAX_TABLE = 2**23
#: ... and all of a structure's tables together (beyond it, products run unfolded).
MAX_TABLES = 2**25


@attrs.frozen(eq=False)
class Project:
    """Residual -> ``m`` local rows: ``y [m, N] = weight.T @ x[rows] + bias[:, None]``.

    ``weight [len(rows), m]`` holds the nonzero rows of the layer's weight; ``coo``
    (``src``, ``dst``, ``val``: global residual row, local row, value) its nonzeros;
    ``sparse`` whether they run as a sparse product; ``table [m, keys]`` its value per
    (token, position) when every row read is static (``y = table[:, key]``), else None.
    ``bias`` is None when zero.
    """

    rows: Any
    weight: Any
    bias: Any
    coo: tuple[Any, Any, Any]
    sparse: bool
    table: Any

    @property
    def reads(self) -> Any:
        """The residual dimensions this reads from the residual stream (none with a table)."""
        return self.rows if self.table is None else self.rows[:0]


@attrs.frozen(eq=False)
class Emit:
    """Local rows -> residual: ``x[cols] += weight.T @ y`` (``weight [m, len(cols)]``);
    ``coo`` its nonzeros (local row, global residual row, value), ``sparse`` whether
    they run as a sparse product."""

    cols: Any
    weight: Any
    coo: tuple[Any, Any, Any]
    sparse: bool


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
    """One connected component of an MLP: ``x[out.cols] += W_out.T @ relu(inp(x))``;
    ``fused`` when it runs as one sparse kernel (`structured_kernels.mlp`) rather than
    BLAS products."""

    inp: Project
    out: Emit
    fused: bool


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
    work: tuple[int, int] = (0, 0)

    def cost(self, n_batch: int, n_pos: int) -> int:
        """About how many multiply-adds a forward pass over ``[n_batch, n_pos]`` ids
        takes without keeping the trace: ``work`` is (per position, attention heads run)."""
        per_position, heads = self.work
        return n_batch * n_pos * (per_position + 4 * n_pos * heads)

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
        self.left = MAX_TABLES  # entries the tables may still take
        self.xs = None
        if self.allow(d_vocab * n_ctx * d_model):  # (token, position) -> residual row
            self.xs = (w["embed.W_E"][:, None, :] + w["pos_embed.W_pos"][None, :n_ctx]
                       ).reshape(d_vocab * n_ctx, d_model).astype(dtype)

    def reads_static(self, rows: np.ndarray) -> bool:
        return self.xs is not None and bool(self.static[rows].all())

    def allow(self, entries: int) -> bool:
        """Whether a table of ``entries`` fits `MAX_TABLE` and what is left of
        `MAX_TABLES` (and if so, count it)."""
        if entries > min(MAX_TABLE, self.left):
            return False
        self.left -= entries
        return True


def _project(w: np.ndarray, b: np.ndarray, st: _Static) -> Project:
    """`Project` for a weight ``w [d_model, m]`` and bias ``b [m]``."""
    rows = np.flatnonzero((w != 0).any(axis=1))
    weight = np.ascontiguousarray(w[rows])
    table = None
    if st.reads_static(rows) and st.allow(weight.shape[1] * len(st.xs)):
        table = np.ascontiguousarray((st.xs[:, rows] @ weight + b).T)  # (m, keys)
    bias = np.ascontiguousarray(b) if b.any() else None
    return Project(rows, weight, bias, _coo(weight, rows, None), _sparse(weight), table)


def _emit(w: np.ndarray) -> Emit:
    """`Emit` for a weight ``w [m, d_model]`` (local rows -> residual)."""
    cols = np.flatnonzero((w != 0).any(axis=0))
    weight = np.ascontiguousarray(w[:, cols])
    return Emit(cols, weight, _coo(weight, None, cols), _sparse(weight))


def _sparse(weight: np.ndarray) -> bool:
    """Whether a product with ``weight`` runs sparse: a dense one is a BLAS product of
    the rows it reads, which pays only for a dense, not too thin matrix."""
    return (np.count_nonzero(weight) < SPARSE_DENSITY * weight.size
            or min(weight.shape) < MIN_DENSE)


def _coo(weight: np.ndarray, rows: Any, cols: Any) -> tuple[Any, Any, Any]:
    """The nonzeros of ``weight`` as (source row, destination row, value), with rows or
    columns mapped to residual dimensions."""
    r, c = np.nonzero(weight)
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
        if q.table is not None and k.table is not None and st.allow(len(st.xs) ** 2):
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
        if inp.table is not None and st.allow(len(out.cols) * len(st.xs)):
            table = np.ascontiguousarray(out.weight.T @ np.maximum(inp.table, 0))  # (C, keys)
            steps.append(Folded(out.cols, table))
            updates.append((out.cols, table))
        else:
            steps.append(Unit(inp, out, inp.sparse or out.sparse))
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
    work, heads = len(unembed.coo[2]), 0       # multiply-adds per position, heads run
    for layer in sublayers:
        for step in layer.steps:
            if isinstance(step, Head) and step.writes:
                read[step.v.reads] = True
                projections = (step.v, step.o)
                if step.scores is None:
                    read[step.q.reads] = read[step.k.reads] = True
                    projections += (step.q, step.k)
                work += sum(len(p.coo[2]) for p in projections)
                heads += 1
            elif isinstance(step, Unit):
                read[step.inp.reads] = True
                work += len(step.inp.coo[2]) + len(step.out.coo[2]) + len(step.out.weight)
            elif isinstance(step, Folded):
                work += len(step.cols)
    sublayers = [attrs.evolve(layer, steps=tuple(
        attrs.evolve(step, needed=bool(read[step.cols].any())) if isinstance(step, Folded)
        else step for step in layer.steps)) for layer in sublayers]
    return Structure(cfg.d_model, cfg.n_ctx, cfg.n_heads, cfg.pad_id, bool(cfg.causal), scale,
                     embed_cols, np.ascontiguousarray(w["embed.W_E"][:, embed_cols]),
                     np.ascontiguousarray(w["pos_embed.W_pos"][:, embed_cols]),
                     tuple(sublayers), unembed, read[embed_cols], (work, heads))


def _convert(obj: Any, xp: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return xp.asarray(obj)
    if isinstance(obj, tuple):
        return tuple(_convert(o, xp) for o in obj)
    if attrs.has(type(obj)):
        return attrs.evolve(obj, **{f.name: _convert(getattr(obj, f.name), xp)
                                    for f in attrs.fields(type(obj))})
    return obj
