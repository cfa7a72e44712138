"""Edge attribution patching (EAP; Syed, Rager and Conmy, "Attribution Patching
Outperforms Automated Circuit Discovery", 2023), and EAP-IG (Hanna, Pezzelle and
Belinkov, "Have Faith in Faithfulness", 2024), through a torch port of rasplang's own
edge-patched forward (`rasplang.circuits.patching`).

EAP estimates every edge's effect at once, to first order: with ``a_s`` the sender's
output on the clean input, ``a'_s`` its ablated value (zero, mean or resampled, as
`rasplang.circuits.patching` defines them) and ``x_r`` the receiver's input,

    attribution(s -> r) = (a'_s - a_s) . d metric / d x_r,

one forward pass and one backward pass per output position for every edge. The gradient
is taken with respect to each receiver input on its own (a head's q, k and v inputs
separately, as TransformerLens's split q/k/v inputs give them): the torch forward
builds each receiver's input as its own tensor, the sum of the senders' outputs, and
takes the gradient with respect to it. The metric, per input and output position
(BOS left out), is the log-probability of the clean output
(`rasplang.circuits.methods.log_probs`, None's logit appended) for a categorical output,
and each output coordinate for a numerical one. An edge's score is the mean over the
domain's inputs of the sum over output positions (and coordinates) of
``|attribution|``, so that effects of opposite sign on different inputs and positions do
not cancel. For a per-position edge ``s -> r@q`` the product is taken at position ``q``.

With ``steps = m > 1`` the gradient is EAP-IG's: the mean of the gradients on ``m``
runs whose embeddings go from the ablated ones towards the clean ones,
``clean + (1 - k/m) (ablated - clean)`` for ``k = 1..m`` (the last run is the clean one,
as in EAP-IG's code); ``steps=1`` is EAP.

Why a port and not TransformerLens 4's hooks: TransformerLens 4's ``TransformerBridge``
runs the Hugging Face form of the model, which needs a LayerNorm (under which every edge
is structural) and pads the heads and the residual; the port runs the compiled model
itself, in float64, with every library program's weights as they are. The gradients are
the exact derivatives of that forward; what EAP then gets wrong is EAP's own: a
saturated softmax, or a ReLU in a flat piece of a lookup table, has no gradient though
the edge into it matters.

Needs torch (the ``lab`` extra), imported when called. Torch runs on one thread here:
the tensors are small, and on 2 cores its threads made EAP-IG 7 times slower.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rasplang.backend.extras import import_extra
from rasplang.circuits.graph import INPUT, LOGITS, QKV, graph, head_name, mlp_name
from rasplang.circuits.methods import NONE_LOGIT
from rasplang.circuits.patching import Weights
from rasplang.circuits.truth import _Lab


def edge_attribution_patching(model: Any, ablation: str = "resample", *, steps: int = 1,
                              positions: bool = False, exhaustive: bool | None = None,
                              samples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Every edge's EAP score (module docstring) over the domain and ablation of
    `rasplang.circuits.ground_truth` (same arguments). ``steps > 1`` is EAP-IG: the
    gradients are averaged over ``steps`` inputs between the ablated and the clean
    embeddings (module docstring)."""
    (torch,) = import_extra("edge attribution patching", "lab", "torch")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # small tensors: threads cost more than they save
    try:
        return _scores(model, torch, ablation, steps, positions, exhaustive, samples, seed)
    finally:
        torch.set_num_threads(threads)


def _scores(model: Any, torch: Any, ablation: str, steps: int, positions: bool,
            exhaustive: bool | None, samples: int, seed: int) -> dict[str, float]:
    g = graph(model)
    full = g.per_position() if positions else g
    lab = _Lab(model, g, ablation, exhaustive, samples, seed)
    port = _Port(lab.weights, torch)
    numerical = model.config.output_encoding == "numerical"
    links = lab.weights.links
    edges = [e for e in full if e.structural]
    totals = {e.name: 0.0 for e in full}
    for patcher, ids in lab.patchers():
        deltas = {s: patcher.ablated[s] - patcher.outs[s] for s in {e.sender for e in edges}}
        acc: dict[tuple[int, str], np.ndarray] = {}    # (target, edge) -> [B] attribution
        for k in range(1, steps + 1):
            shift = (1 - k / steps) * deltas[INPUT] if k < steps else None
            for t, grads in enumerate(port.gradients(ids, patcher.clean_logits, numerical,
                                                     shift)):
                for e in edges:
                    if e.position is not None and e.position >= patcher.T:
                        continue
                    src, dst = links[(e.sender, e.receiver, e.kind)]
                    delta = deltas[e.sender][..., src]                     # (B|1, T, n)
                    grad = grads[(e.receiver, e.kind)][..., dst]           # (B, T, n)
                    if e.position is None:
                        a = (delta * grad).sum(axis=(1, 2))                # (B,)
                    else:
                        a = (delta[:, e.position] * grad[:, e.position]).sum(axis=-1)
                    acc[(t, e.name)] = acc.get((t, e.name), 0.0) + a / steps
        for (_, name), a in acc.items():
            totals[name] += float(np.abs(a).sum())
    n = lab.inputs.count
    return {k: v / n if n else 0.0 for k, v in totals.items()}


class _Port:
    """`rasplang.circuits.patching.Weights`'s forward in torch float64, every receiver
    input a tensor of its own."""

    def __init__(self, weights: Weights, torch: Any):
        self.wt, self.torch = weights, torch
        t = self._t
        self.heads = {n: tuple(t(a) for a in w) for n, w in weights.heads.items()}
        self.mlps = {n: tuple(t(a) for a in w) for n, w in weights.mlps.items()}
        self.unembed = tuple(t(a) for a in weights.unembed)
        self.w = {k: t(v) for k, v in weights.w.items()}
        self.writes = {n: t(w) for n, w in weights.writes.items()}
        self.rows = {k: t(r) for k, r in weights.rows.items()}

    def _t(self, a: Any) -> Any:
        return self.torch.as_tensor(np.asarray(a))

    def _norm(self, x: Any, name: str) -> Any:
        cfg = self.wt.cfg
        if not self.wt.pre:
            return x
        if cfg.normalization_type == "LN":
            x = x - x.mean(dim=-1, keepdim=True)
            scale = self.torch.sqrt((x * x).mean(dim=-1, keepdim=True) + cfg.eps)
            return x / scale * self.w[name + ".w"] + self.w[name + ".b"]
        scale = self.torch.sqrt((x * x).mean(dim=-1, keepdim=True) + cfg.eps)
        return x / scale * self.w[name + ".w"]

    def _act(self, h: Any) -> Any:
        if getattr(self.wt.cfg, "act_fn", "relu") == "gelu_new":
            return self.torch.nn.functional.gelu(h, approximate="tanh")
        return self.torch.relu(h)

    def forward(self, ids: np.ndarray, shift: np.ndarray | None = None,
                ) -> tuple[Any, dict[tuple[str, str | None], Any]]:
        """The logits ``[B, T, d_vocab_out]`` and every receiver input (on the
        dimensions it reads), each a tensor of its own that a gradient can be taken for;
        ``shift`` (``[B | 1, T, writes]``) is added to the embeddings where they write."""
        torch, cfg = self.torch, self.wt.cfg
        B, T = ids.shape
        x = self.w["embed.W_E"][self._t(ids)] + self.w["pos_embed.W_pos"][:T]  # (B, T, d)
        if shift is not None:
            x = x.index_add(-1, self.writes[INPUT],
                            self._t(np.broadcast_to(shift, (B, T, shift.shape[-1])).copy()))
        visible = torch.tril(torch.ones(T, T, dtype=torch.bool)) if cfg.causal else None
        inputs: dict[tuple[str, str | None], Any] = {}

        def take(key: tuple[str, str | None]) -> Any:
            a = x[..., self.rows[key]]           # a new tensor: this receiver's alone
            if not a.requires_grad:              # the first layer's: read the input only
                a.requires_grad_()
            inputs[key] = a
            return a

        for i in range(cfg.n_layers):
            heads = [head_name(i, h) for h in range(cfg.n_heads)]
            outs = []
            for h in heads:
                q_in, k_in, v_in = (take((h, kind)) for kind in QKV)
                wq, bq, wk, bk, wv, bv, wo = self.heads[h]
                ln = f"blocks.{i}.ln1"
                q = self._norm(q_in, ln) @ wq + bq                   # (B, T, E)
                k = self._norm(k_in, ln) @ wk + bk
                scores = q @ k.transpose(1, 2) / cfg.attn_scale     # (B, T, T)
                if visible is not None:
                    scores = scores.masked_fill(~visible, -math.inf)
                pattern = torch.softmax(scores, dim=-1)
                z = pattern @ (self._norm(v_in, ln) @ wv + bv)      # (B, T, E_ov)
                outs.append((h, z @ wo))                            # (B, T, writes)
            x = x + self.w[f"blocks.{i}.attn.b_O"]
            for h, out in outs:
                x = x.index_add(-1, self.writes[h], out)
            m = mlp_name(i)
            w_in, b_in, w_out, b_out = self.mlps[m]
            hidden = self._act(self._norm(take((m, None)), f"blocks.{i}.ln2") @ w_in + b_in)
            x = x.index_add(-1, self.writes[m], hidden @ w_out + b_out)
        w_u, b_u = self.unembed
        logits = self._norm(take((LOGITS, None)), "ln_final") @ w_u + b_u
        return logits, inputs

    def gradients(self, ids: np.ndarray, clean_logits: np.ndarray, numerical: bool,
                  shift: np.ndarray | None = None):
        """For every output position and coordinate, every receiver input's gradient
        ``[B, T, reads]`` of the metric (module docstring), as numpy arrays; ``shift``
        moves the embeddings (`forward`)."""
        torch = self.torch
        logits, inputs = self.forward(ids, shift)
        if numerical:
            targets = [logits[:, p, c] for p in range(1, logits.shape[1])
                       for c in range(logits.shape[2])]
        else:
            full = torch.cat([logits, torch.full((*logits.shape[:-1], 1), NONE_LOGIT,
                                                 dtype=logits.dtype)], dim=-1)
            lp = torch.log_softmax(full, dim=-1)                         # (B, T, V + 1)
            best = clean_logits.argmax(axis=-1)
            top = np.take_along_axis(clean_logits, best[..., None], axis=-1)[..., 0]
            answer = self._t(np.where(top > NONE_LOGIT, best, clean_logits.shape[-1]))
            picked = lp.gather(-1, answer[..., None])[..., 0]            # (B, T)
            targets = [picked[:, p] for p in range(1, logits.shape[1])]
        keys = list(inputs)
        for target in targets:
            grads = torch.autograd.grad(target.sum(), [inputs[k] for k in keys],
                                        retain_graph=True, allow_unused=True)
            yield {k: (np.zeros(inputs[k].shape) if gr is None else gr.numpy())
                   for k, gr in zip(keys, grads)}

