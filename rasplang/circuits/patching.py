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
outputs with the ablated ones replaced.
"""

from __future__ import annotations

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

    def norm(self, x: np.ndarray, name: str) -> np.ndarray:
        """The pre-norm ``name`` (``blocks.0.ln1``, ...) of a full residual, or ``x``
        without a norm."""
        return norm(x, self.w, name, self.cfg) if self.pre else x

    def head(self, name: str, q_in: np.ndarray, k_in: np.ndarray, v_in: np.ndarray,
             visible: np.ndarray | None) -> np.ndarray:
        """One head's output on the dimensions it writes, ``[B, T, writes]``, from its
        three inputs on the dimensions each reads."""
        wq, bq, wk, bk, wv, bv, wo = self.heads[name]
        ln = f"blocks.{self.graph.nodes[name].layer}.ln1"
        q = _linear(self.norm(q_in, ln), wq, bq)                  # (B, T, E)
        k = _linear(self.norm(k_in, ln), wk, bk)
        scores = q @ k.transpose(0, 2, 1) / self.cfg.attn_scale   # (B, T, T)
        if visible is not None:
            scores = np.where(visible, scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        pattern = np.exp(scores)
        pattern /= pattern.sum(axis=-1, keepdims=True)
        z = pattern @ _linear(self.norm(v_in, ln), wv, bv)        # (B, T, E_ov)
        return _linear(z, wo, 0.0)                                # (B, T, writes)

    def mlp(self, name: str, x_in: np.ndarray) -> np.ndarray:
        """One MLP's output on the dimensions it writes, ``[B, T, writes]``."""
        w_in, b_in, w_out, b_out = self.mlps[name]
        ln = f"blocks.{self.graph.nodes[name].layer}.ln2"
        hidden = activation(_linear(self.norm(x_in, ln), w_in, b_in), self.cfg)
        return _linear(hidden, w_out, b_out)

    def logits(self, x_in: np.ndarray) -> np.ndarray:
        """The unembedding of the final residual on the dimensions it reads."""
        return _linear(self.norm(x_in, "ln_final"), *self.unembed)

    def forward(self, ids: np.ndarray, visible: np.ndarray | None,
                ) -> tuple[dict[str, np.ndarray], dict[tuple[str, str | None], np.ndarray],
                           np.ndarray]:
        """The unablated run on ``ids [B, T]``: each component's output (on the
        dimensions it writes), each receiver input (on the dimensions it reads), and
        the logits."""
        cfg = self.cfg
        x = self.w["embed.W_E"][ids] + self.w["pos_embed.W_pos"][: ids.shape[1]]  # (B, T, d)
        outs = {INPUT: x[..., self.writes[INPUT]]}
        bases: dict[tuple[str, str | None], np.ndarray] = {}
        for i in range(cfg.n_layers):
            heads = [head_name(i, h) for h in range(cfg.n_heads)]
            for h in heads:
                ins = [x[..., self.rows[(h, kind)]] for kind in QKV]
                bases.update(((h, kind), a) for kind, a in zip(QKV, ins))
                outs[h] = self.head(h, *ins, visible)
            x = x + self.w[f"blocks.{i}.attn.b_O"]
            for h in heads:
                x[..., self.writes[h]] += outs[h]
            m = mlp_name(i)
            bases[(m, None)] = x[..., self.rows[(m, None)]]
            outs[m] = self.mlp(m, bases[(m, None)])
            x[..., self.writes[m]] += outs[m]
        bases[(LOGITS, None)] = x[..., self.rows[(LOGITS, None)]]
        return outs, bases, self.logits(bases[(LOGITS, None)])


def _linear(x: np.ndarray, w: np.ndarray, b: Any) -> np.ndarray:
    """``x [B, T, n] @ w [n, m] + b`` as one 2-D product (one BLAS call)."""
    B, T, n = x.shape
    return (x.reshape(B * T, n) @ w).reshape(B, T, -1) + b


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
                 corrupt: np.ndarray | None = None):
        self.weights, self.graph = weights, weights.graph
        self.B, self.T = ids.shape
        self.visible = np.tril(np.ones((self.T, self.T), dtype=bool)) if weights.cfg.causal \
            else None
        self.outs, self.bases, self.clean_logits = weights.forward(ids, self.visible)
        if ablation == "zero":
            self.ablated = {n: np.zeros((1, self.T, o.shape[-1])) for n, o in self.outs.items()}
        elif ablation == "mean":
            if mean is None:
                mean = {n: o.mean(axis=0, keepdims=True) for n, o in self.outs.items()}
            self.ablated = dict(mean)
        elif ablation == "resample":
            if corrupt is None or corrupt.shape != ids.shape:
                raise ValueError("resample ablation needs corrupt inputs of the same shape")
            self.ablated = weights.forward(corrupt, self.visible)[0]
        else:
            raise ValueError(f"ablation must be one of {', '.join(map(repr, ABLATIONS))}, "
                             f"got {ablation!r}")

    def run(self, ablated: Ablated) -> np.ndarray | None:
        """The logits ``[B, T, d_vocab_out]`` with the edges in ``ablated`` ablated, or
        None when no edge can change them (the unablated logits hold)."""
        ablated = {key: list(v) for key, v in ablated.items() if v}
        new: dict[str, np.ndarray] = {}
        wt, cfg = self.weights, self.weights.cfg
        for i in range(cfg.n_layers):
            for h in range(cfg.n_heads):
                name = head_name(i, h)
                if not len(wt.writes[name]):
                    continue
                ins = [self._input(name, kind, new, ablated) for kind in QKV]
                if all(x is None for x in ins):
                    continue
                q, k, v = (self.bases[(name, kind)] if x is None else x
                           for kind, x in zip(QKV, ins))
                self._keep(name, wt.head(name, q, k, v, self.visible), new)
            name = mlp_name(i)
            x = self._input(name, None, new, ablated) if len(wt.writes[name]) else None
            if x is not None:
                self._keep(name, wt.mlp(name, x), new)
        x = self._input(LOGITS, None, new, ablated)
        return None if x is None else wt.logits(x)

    def _input(self, receiver: str, kind: str | None, new: dict[str, np.ndarray],
               ablated: dict) -> np.ndarray | None:
        """The receiver input, patched, or None when it is the unablated one."""
        links = self.weights.links
        cut = [(s, p) for s, p in ablated.get((receiver, kind), ())
               if (s, receiver, kind) in links and (p is None or p < self.T)]
        moved = [s for s in self.weights.readers.get((receiver, kind), ()) if s in new]
        if not cut and not moved:
            return None
        x = self.bases[(receiver, kind)].copy()
        for s in moved:
            src, dst = links[(s, receiver, kind)]
            x[..., dst] += (new[s] - self.outs[s])[..., src]
        for s, p in cut:
            src, dst = links[(s, receiver, kind)]
            now = new.get(s, self.outs[s])
            if p is None:
                x[..., dst] += (self.ablated[s] - now)[..., src]
            else:
                x[:, p, dst] += (self.ablated[s][:, p] - now[:, p])[..., src]
        return x

    def _keep(self, name: str, out: np.ndarray, new: dict[str, np.ndarray]) -> None:
        """Record a recomputed output, unless it equals the unablated one."""
        if not np.array_equal(out, self.outs[name]):
            new[name] = out
