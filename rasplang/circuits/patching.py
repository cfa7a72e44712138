"""The edge-patched forward pass: the dense forward with every component's output kept
apart, so that one receiver's input can see a sender's contribution ablated.

It mirrors `rasplang.backend.forward` (TransformerLens layout: ``W_Q/W_K/W_V
[n_heads, d_model, d_head]``, ``W_O [n_heads, d_head, d_model]``, ``W_in [d_model,
d_mlp]``, ``W_out [d_mlp, d_model]``), batched over ``[B, T]`` inputs of one length. The
residual stream is a sum of component outputs,

    x = input + sum(heads before) + sum(MLPs before) + sum(b_O before),

``input = W_E[ids] + W_pos``, a head's output ``softmax(q k^T / sqrt(d_head)) v W_O[h]``
(TransformerLens's ``hook_result``, without ``b_O``), an MLP's ``act(x W_in + b_in) W_out +
b_out``. The attention biases ``b_O`` are no component's: every receiver sees them and
no ablation removes them (they are zero in compiled models).

Ablating the edge ``s -> r<kind>`` replaces, in the input ``kind`` of ``r`` only, the
output of ``s`` by its ablated value: zero, its mean over the inputs of the domain of
the same length (per position), or its output on another input of the same length
(resampling). The ablated values come from the unablated forward. A pre-norm model's
receiver normalises the patched input itself, as TransformerLens's split q/k/v inputs
do; a post-norm model is no sum of component outputs and is refused.

Everything is kept compact: a component's output only on the residual dimensions it
writes, a receiver's input only on the dimensions it reads (all of them under a norm).
Dropping dimensions that a weight never touches changes no product.

A patched run recomputes only what can change: a component is recomputed when one of
its inputs has an ablated edge, or reads (through a structural edge, see
`rasplang.circuits.graph`) a component that was recomputed with a different output;
everything else is the unablated run's. Its input is then the unablated residual plus
the senders' changes, ``x_in = x + sum_s (new_s - old_s) + sum_ablated (abl_s - new_s)``
(the last term at the ablated positions only), which equals the sum of the senders'
outputs with the ablated ones replaced. It is recomputed only on the inputs (batch rows)
where that sum differs from the unablated input, an MLP and the unembedding only at
those positions, and a head whose query and key inputs are unchanged reuses its
unablated attention pattern; a recomputed output is kept only on the rows where it
differs. Every other row keeps the unablated values, so the logits are the same as a
run of every component on the whole batch.

Row-wise steps (the projections, MLPs, the unembedding) run once per distinct row when
most rows repeat, as they do in a compiled model (one-hot values, a few numbers); a
head's pattern runs once per distinct pair of query and key inputs (`_distinct`). An
MLP whose weights are mostly zeros runs as the structured forward's sparse kernel.
These change the order of floating-point sums, never what is computed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from rasplang.backend.forward import activation, norm
from rasplang.circuits.graph import INPUT, LOGITS, QKV, ComponentGraph, head_name, mlp_name

ABLATIONS = ("zero", "mean", "resample")
#: An ablated edge into one receiver input: the sender and the position (None: all).
Ablated = Mapping[tuple[str, str | None], Iterable[tuple[str, int | None]]]


class Weights:
    """A model's weights per component in float64, each head and MLP cut to the residual
    dimensions it reads and writes and the head dimensions and units it uses; the
    dimensions every structural edge moves (``links``)."""

    def __init__(self, model: Any, graph: ComponentGraph):
        cfg, w = model.config, model.weights
        if getattr(cfg, "normalization_type", None) is not None and cfg.norm_position == "post":
            raise ValueError("a post-norm model's residual stream is not a sum of its "
                             "components' outputs, so its edges cannot be ablated; compile "
                             "with norm_position='pre' or without a norm")
        self.cfg, self.graph = cfg, graph
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
        self.pre = getattr(cfg, "normalization_type", None) is not None
        every = np.arange(cfg.d_model)
        self.writes = {n: np.asarray(node.writes, dtype=np.int64)
                       for n, node in graph.nodes.items()}
        self.rows = {key: every if self.pre else np.asarray(r, dtype=np.int64)
                     for key, r in graph.reads.items()}
        self.links: dict[tuple[str, str, str | None], tuple[np.ndarray, np.ndarray]] = {}
        self.readers: dict[tuple[str, str | None], list[str]] = {}
        for e in graph.edges:
            if e.structural and e.position in (None, 0):
                key = (e.receiver, e.kind)
                dims = np.intersect1d(self.writes[e.sender], self.rows[key])
                self.links[(e.sender, e.receiver, e.kind)] = (
                    np.searchsorted(self.writes[e.sender], dims),
                    np.searchsorted(self.rows[key], dims))
                self.readers.setdefault(key, []).append(e.sender)
        self.heads: dict[str, tuple[Any, ...]] = {}
        self.mlps: dict[str, tuple[Any, ...]] = {}
        for i in range(cfg.n_layers):
            p = f"blocks.{i}."
            for h in range(cfg.n_heads):
                name = head_name(i, h)
                wq, wk, wv, wo = (self.w[p + f"attn.W_{n}"][h] for n in "QKVO")
                bq, bk, bv = (self.w[p + f"attn.b_{n}"][h] for n in "QKV")
                qk = np.flatnonzero((wq != 0).any(0) | (wk != 0).any(0) | (bq != 0) | (bk != 0))
                ov = np.flatnonzero((wv != 0).any(0) | (wo != 0).any(1))
                self.heads[name] = tuple(
                    np.ascontiguousarray(a) for a in (
                        wq[self.rows[(name, "q")]][:, qk], bq[qk],
                        wk[self.rows[(name, "k")]][:, qk], bk[qk],
                        wv[self.rows[(name, "v")]][:, ov], bv[ov],
                        wo[ov][:, self.writes[name]]))
            name = mlp_name(i)
            w_in, w_out = self.w[p + "mlp.W_in"], self.w[p + "mlp.W_out"]
            units = np.flatnonzero((w_in != 0).any(0) | (w_out != 0).any(1))
            self.mlps[name] = tuple(
                np.ascontiguousarray(a) for a in (
                    w_in[self.rows[(name, None)]][:, units], self.w[p + "mlp.b_in"][units],
                    w_out[units][:, self.writes[name]],
                    self.w[p + "mlp.b_out"][self.writes[name]]))
        self.unembed = (np.ascontiguousarray(self.w["unembed.W_U"][self.rows[(LOGITS, None)]]),
                        self.w["unembed.b_U"])
        # MLPs whose weights are mostly zeros run as one sparse kernel (ReLU only)
        self.sparse: dict[str, tuple[np.ndarray, ...]] = {}
        if getattr(cfg, "act_fn", "relu") != "gelu_new":
            for name, (w_in, _, w_out, _) in self.mlps.items():
                nonzero = np.count_nonzero(w_in) + np.count_nonzero(w_out)
                if SPARSE_GAIN * nonzero <= w_in.size + w_out.size:
                    self.sparse[name] = (*_coo(w_in), *_coo(w_out))

    def norm(self, x: np.ndarray, name: str) -> np.ndarray:
        """The pre-norm ``name`` (``blocks.0.ln1``, ...) of a full residual, or ``x``
        without a norm."""
        return norm(x, self.w, name, self.cfg) if self.pre else x

    def head(self, name: str, q_in: np.ndarray | None, k_in: np.ndarray | None,
             v_in: np.ndarray, visible: np.ndarray | None,
             pattern: np.ndarray | None = None) -> np.ndarray:
        """One head's output on the dimensions it writes, ``[B, T, writes]``, from its
        three inputs on the dimensions each reads (or, given its attention ``pattern``
        ``[B, T, T]``, from the value input alone)."""
        wv, bv, wo = self.heads[name][4:]
        ln = f"blocks.{self.graph.nodes[name].layer}.ln1"
        if pattern is None:
            pattern = self.pattern(name, q_in, k_in, visible)
        v = _rowwise(lambda a: self.norm(a, ln) @ wv + bv, v_in, wv.size)
        z = pattern @ v                                           # (B, T, E_ov)
        return _rowwise(lambda a: a @ wo, z, wo.size)             # (B, T, writes)

    def pattern(self, name: str, q_in: np.ndarray, k_in: np.ndarray,
                visible: np.ndarray | None) -> np.ndarray:
        """One head's attention pattern ``[B, T, T]`` from its query and key inputs,
        computed once per distinct pair of query and key inputs when at most half the
        inputs are distinct (e.g. a head whose query and key read positions only)."""
        B, T, n = q_in.shape
        E = self.heads[name][0].shape[1]
        if B >= 2 and PATTERN_WORK * (n + k_in.shape[2]) <= T * (E + PATTERN_WORK):
            both = np.concatenate([q_in.reshape(B, -1), k_in.reshape(B, -1)], axis=1)
            found = _distinct(both)
            if found is not None:
                first, inverse = found
                return self._pattern(name, q_in[first], k_in[first], visible)[inverse]
        return self._pattern(name, q_in, k_in, visible)

    def _pattern(self, name: str, q_in: np.ndarray, k_in: np.ndarray,
                 visible: np.ndarray | None) -> np.ndarray:
        wq, bq, wk, bk = self.heads[name][:4]
        ln = f"blocks.{self.graph.nodes[name].layer}.ln1"
        q = _rowwise(lambda a: self.norm(a, ln) @ wq + bq, q_in, wq.size)   # (B, T, E)
        k = _rowwise(lambda a: self.norm(a, ln) @ wk + bk, k_in, wk.size)
        scores = q @ k.transpose(0, 2, 1) / self.cfg.attn_scale   # (B, T, T)
        if visible is not None:
            scores = np.where(visible, scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        pattern = np.exp(scores)
        pattern /= pattern.sum(axis=-1, keepdims=True)
        return pattern

    def mlp(self, name: str, x_in: np.ndarray) -> np.ndarray:
        """One MLP's output on the dimensions it writes, ``[..., writes]`` for an input
        ``[..., reads]`` (``[B, T]`` or any rows: it is position-wise)."""
        w_in, b_in, w_out, b_out = self.mlps[name]
        ln = f"blocks.{self.graph.nodes[name].layer}.ln2"
        coo = self.sparse.get(name)

        def run(a: np.ndarray) -> np.ndarray:
            a = self.norm(a, ln)
            if coo is None or len(a) < SPARSE_ROWS:
                return activation(a @ w_in + b_in, self.cfg) @ w_out + b_out
            from rasplang.backend import structured_kernels

            out = np.zeros((w_out.shape[1], len(a)))                 # (writes, N)
            structured_kernels.mlp(np.ascontiguousarray(a.T), *coo[:3], b_in, *coo[3:], out)
            return out.T + b_out

        work = w_in.size + w_out.size if coo is None else sum(len(c) for c in coo[2::3])
        return _rowwise(run, x_in, work)

    def logits(self, x_in: np.ndarray) -> np.ndarray:
        """The unembedding of the final residual on the dimensions it reads (any rows)."""
        w_u, b_u = self.unembed
        return _rowwise(lambda a: self.norm(a, "ln_final") @ w_u + b_u, x_in, w_u.size)

    def forward(self, ids: np.ndarray, visible: np.ndarray | None,
                patterns: dict[str, np.ndarray] | None = None,
                ) -> tuple[dict[str, np.ndarray], dict[tuple[str, str | None], np.ndarray],
                           np.ndarray]:
        """The unablated run on ``ids [B, T]``: each component's output (on the
        dimensions it writes), each receiver input (on the dimensions it reads), and
        the logits; each head's attention pattern put in ``patterns`` when given (a head
        that writes nothing is not run)."""
        cfg = self.cfg
        B, T = ids.shape
        x = self.w["embed.W_E"][ids] + self.w["pos_embed.W_pos"][:T]  # (B, T, d)
        outs = {INPUT: x[..., self.writes[INPUT]]}
        bases: dict[tuple[str, str | None], np.ndarray] = {}
        for i in range(cfg.n_layers):
            heads = [head_name(i, h) for h in range(cfg.n_heads)]
            for h in heads:
                ins = [x[..., self.rows[(h, kind)]] for kind in QKV]
                bases.update(((h, kind), a) for kind, a in zip(QKV, ins))
                if not len(self.writes[h]):
                    outs[h] = np.zeros((B, T, 0))
                    continue
                pattern = self.pattern(h, ins[0], ins[1], visible)
                if patterns is not None:
                    patterns[h] = pattern
                outs[h] = self.head(h, None, None, ins[2], visible, pattern)
            b_o = self.w[f"blocks.{i}.attn.b_O"]
            if b_o.any():
                x += b_o         # x is no array kept elsewhere: the inputs are copies
            for h in heads:
                x[..., self.writes[h]] += outs[h]
            m = mlp_name(i)
            bases[(m, None)] = x[..., self.rows[(m, None)]]
            if not len(self.writes[m]):
                outs[m] = np.zeros((B, T, 0))
                continue
            outs[m] = self.mlp(m, bases[(m, None)])
            x[..., self.writes[m]] += outs[m]
        bases[(LOGITS, None)] = x[..., self.rows[(LOGITS, None)]]
        return outs, bases, self.logits(bases[(LOGITS, None)])


#: A row-wise step over at least this many rows may be computed once per distinct row.
DISTINCT_ROWS = 64
#: ... when it costs at least this many multiply-adds per row per input and output
#: number (finding the distinct rows costs a few operations per number).
DISTINCT_WORK = 8
#: A head's pattern is computed once per distinct query and key inputs when its
#: ``T * (E + PATTERN_WORK)`` reaches ``PATTERN_WORK`` times the numbers read per position.
PATTERN_WORK = 8
#: An MLP runs as a sparse kernel when its weights hold at most 1 / `SPARSE_GAIN`
#: nonzeros, on at least `SPARSE_ROWS` positions.
SPARSE_GAIN = 4
SPARSE_ROWS = 256


def _rowwise(f: Any, x: np.ndarray, work: int) -> np.ndarray:
    """``f`` (``[k, n] -> [k, m]``, row by row) of ``x [..., n]`` as ``[..., m]``, as one
    2-D product over the rows; ``work`` is its multiply-adds per row. A compiled
    model's residuals take few distinct values (one-hot categorical values, a few
    numbers), so from `DISTINCT_ROWS` rows on, a step of at least `DISTINCT_WORK`
    multiply-adds per number runs once per distinct row when at most half the rows are
    distinct (`_distinct`)."""
    lead, n = x.shape[:-1], x.shape[-1]
    flat = x.reshape(math.prod(lead), n)
    if len(flat) >= DISTINCT_ROWS and n and work >= DISTINCT_WORK * n:
        found = _distinct(flat)
        if found is not None:
            first, inverse = found
            return f(flat[first])[inverse].reshape(*lead, -1)
    return f(flat).reshape(*lead, -1)


def _coo(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nonzeros of ``w`` as (row, column, value), as `structured_kernels.mlp` takes
    them."""
    r, c = np.nonzero(w)
    return r.astype(np.int64), c.astype(np.int64), np.ascontiguousarray(w[r, c])


def _distinct(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(first, inverse)`` with ``flat[first][inverse]`` equal to ``flat [N, n]`` and
    ``first`` the distinct rows, or None when more than half the rows are distinct.
    Rows are told apart by one random projection each, and the result checked against
    ``flat`` row by row (a projection shared by different rows, or a NaN, gives None)."""
    key = flat @ _probe(flat.shape[1])
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    if 2 * len(first) > len(flat) or not np.array_equal(flat[first][inverse], flat):
        return None
    return first, inverse


@functools.cache
def _probe(n: int) -> np.ndarray:
    """A fixed random direction of ``n`` dimensions (`_distinct`)."""
    return np.random.default_rng(n).standard_normal(n)


class Patcher:
    """One batch of inputs of one length: the unablated run with every component's
    output and every receiver's input kept, the ablated values, and `run`, the forward
    with some edges ablated.

    ``ids [B, T]`` are embedding ids (BOS first); ``ablation`` is "zero", "mean" (with
    ``mean``: component -> ``[1, T, writes]``, over the batch when None) or
    "resample" (with ``corrupt [B, T]``, the inputs whose outputs replace the ablated
    ones).
    """

    def __init__(self, weights: Weights, ids: np.ndarray, ablation: str,
                 mean: Mapping[str, np.ndarray] | None = None,
                 corrupt: np.ndarray | None = None, *,
                 clean: tuple[Any, Any, np.ndarray] | None = None,
                 corrupt_outs: Mapping[str, np.ndarray] | None = None,
                 patterns: Mapping[str, np.ndarray] | None = None):
        self.weights, self.graph = weights, weights.graph
        self.B, self.T = ids.shape
        self.visible = np.tril(np.ones((self.T, self.T), dtype=bool)) if weights.cfg.causal \
            else None
        # ``clean``: `Weights.forward` of ``ids`` already run (with its heads' attention
        # ``patterns``); ``corrupt_outs``: the component outputs on ``corrupt``
        # (resampling), e.g. gathered from the unablated runs of the inputs it holds
        self.patterns: dict[str, np.ndarray] = dict(patterns or {})
        self.outs, self.bases, self.clean_logits = clean if clean is not None \
            else weights.forward(ids, self.visible, self.patterns)
        if ablation == "zero":
            self.ablated = {n: np.zeros((1, self.T, o.shape[-1])) for n, o in self.outs.items()}
        elif ablation == "mean":
            if mean is None:
                mean = {n: o.mean(axis=0, keepdims=True) for n, o in self.outs.items()}
            self.ablated = dict(mean)
        elif ablation == "resample":
            if corrupt_outs is not None:
                self.ablated = dict(corrupt_outs)
            elif corrupt is None or corrupt.shape != ids.shape:
                raise ValueError("resample ablation needs corrupt inputs of the same shape")
            else:
                self.ablated = weights.forward(corrupt, self.visible)[0]
        else:
            raise ValueError(f"ablation must be one of {', '.join(map(repr, ABLATIONS))}, "
                             f"got {ablation!r}")

    def run(self, ablated: Ablated) -> np.ndarray | None:
        """The logits ``[B, T, d_vocab_out]`` with the edges in ``ablated`` ablated, or
        None when no edge can change them (the unablated logits hold)."""
        got = self.run_rows(ablated)
        if got is None:
            return None
        rows, logits = got
        if len(rows) == self.B:
            return logits
        full = self.clean_logits.copy()
        full[rows] = logits
        return full

    def run_rows(self, ablated: Ablated) -> tuple[np.ndarray, np.ndarray] | None:
        """`run` on the inputs it can change: ``(rows, logits [len(rows), T,
        d_vocab_out])``, every other input keeping its unablated logits; None when it
        changes none.

        Each recomputed component runs only on the inputs where one of its inputs
        differs from the unablated run (an MLP and the logits only at those positions),
        and its output is kept only where it differs (module docstring)."""
        ablated = {key: list(v) for key, v in ablated.items() if v}
        new: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        wt, cfg = self.weights, self.weights.cfg
        for i in range(cfg.n_layers):
            for h in range(cfg.n_heads):
                name = head_name(i, h)
                if not len(wt.writes[name]):
                    continue
                ins = [self._input(name, kind, new, ablated) for kind in QKV]
                got = [x for x in ins if x is not None]
                if not got:
                    continue
                rows = got[0][0] if len(got) == 1 else \
                    functools.reduce(np.union1d, (r for r, _ in got))
                q, k, v = (self._at((name, kind), rows, x) for kind, x in zip(QKV, ins))
                pattern = None
                if ins[0] is None and ins[1] is None and name in self.patterns:
                    pattern = self._take(self.patterns[name], rows)
                out = wt.head(name, q, k, v, self.visible if pattern is None else None,
                              pattern=pattern)
                self._keep(name, rows, out, new)
            name = mlp_name(i)
            got = self._input(name, None, new, ablated) if len(wt.writes[name]) else None
            if got is not None:
                rows, x = got
                out = self._positions(self.outs[name], (name, None), rows, x,
                                      lambda a, m=name: wt.mlp(m, a))
                self._keep(name, rows, out, new)
        got = self._input(LOGITS, None, new, ablated)
        if got is None:
            return None
        rows, x = got
        return rows, self._positions(self.clean_logits, (LOGITS, None), rows, x, wt.logits)

    def _take(self, a: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``a[rows]`` (``a`` itself when ``rows`` are every input)."""
        return a if len(rows) == self.B else a[rows]

    def _at(self, key: tuple[str, str | None], rows: np.ndarray,
            got: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        """A receiver input on ``rows``: the unablated one with the patched rows
        ``got`` (a subset of ``rows``) put in."""
        if got is None:
            return self._take(self.bases[key], rows)
        at, x = got
        if len(at) == len(rows):
            return x
        out = self.bases[key][rows]
        out[np.searchsorted(rows, at)] = x
        return out

    def _positions(self, old: np.ndarray, key: tuple[str, str | None], rows: np.ndarray,
                   x: np.ndarray, f: Any) -> np.ndarray:
        """A position-wise component's output on ``rows`` for its patched input ``x``:
        ``f`` runs only at the positions where ``x`` differs from the unablated input,
        the others keep ``old`` (the unablated output)."""
        at = (x != self._take(self.bases[key], rows)).any(axis=-1)     # (rows, T)
        out = old[rows]
        out[at] = f(x[at])
        return out

    def _input(self, receiver: str, kind: str | None,
               new: dict[str, tuple[np.ndarray, np.ndarray]], ablated: dict,
               ) -> tuple[np.ndarray, np.ndarray] | None:
        """The receiver input, patched, on the inputs where it differs from the
        unablated one: ``(rows, x [len(rows), T, reads])``, or None where it differs
        nowhere."""
        links, key = self.weights.links, (receiver, kind)
        cut = [(s, p) for s, p in ablated.get(key, ())
               if (s, receiver, kind) in links and (p is None or p < self.T)]
        moved = [s for s in self.weights.readers.get(key, ()) if s in new]
        if not cut and not moved:
            return None
        parts = []   # (rows, position or None, destination dims, change on those rows)
        for s in moved:
            src, dst = links[(s, receiver, kind)]
            at, out = new[s]
            parts.append((at, None, dst, (out - self._take(self.outs[s], at))[..., src]))
        for s, p in cut:
            src, dst = links[(s, receiver, kind)]
            positions = slice(None) if p is None else slice(p, p + 1)
            abl = self.ablated[s][:, positions][..., src]              # (B | 1, T | 1, n)
            change = abl - self.outs[s][:, positions][..., src]
            if s in new:
                at, out = new[s]
                change = np.broadcast_to(change, (self.B, *change.shape[1:])).copy()
                change[at] = (abl if len(abl) == 1 else abl[at]) - out[:, positions][..., src]
            elif len(change) == 1:
                change = np.broadcast_to(change, (self.B, *change.shape[1:]))
            at = np.flatnonzero(change.reshape(self.B, -1).any(axis=1))
            parts.append((at, p, dst, change[at]))
        rows = functools.reduce(np.union1d, (at for at, *_ in parts)) if len(parts) > 1 \
            else parts[0][0]
        if not len(rows):
            return None
        base = self.bases[key][rows]
        x = base.copy()
        for at, p, dst, change in parts:
            if not len(at):
                continue
            where = slice(None) if len(at) == len(rows) else np.searchsorted(rows, at)
            if p is None:
                part = x[where]
                part[..., dst] += change
                x[where] = part
            elif isinstance(where, slice):
                x[:, p, dst] += change[:, 0]
            else:
                x[where[:, None], p, dst[None, :]] += change[:, 0]
        moved = (x != base).reshape(len(rows), -1).any(axis=1)
        if not moved.all():
            rows, x = rows[moved], x[moved]
        return (rows, x) if len(rows) else None

    def _keep(self, name: str, rows: np.ndarray, out: np.ndarray,
              new: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Record a recomputed output on ``rows``, on the rows where it differs from the
        unablated one."""
        moved = (out != self._take(self.outs[name], rows)).reshape(len(rows), -1).any(axis=1)
        if moved.all():
            new[name] = (rows, out)
        elif moved.any():
            new[name] = (rows[moved], out[moved])
