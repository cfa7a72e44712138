"""The forward pass of a compiled model, on numpy or CuPy (``xp``), batched over [B, T].

Weights follow TransformerLens: ``W_Q/W_K/W_V [n_heads, d_model, d_head]``,
``W_O [n_heads, d_head, d_model]``, ``W_in [d_model, d_mlp]``, ``W_out [d_mlp, d_model]``,
scores divided by ``attn_scale = sqrt(d_head)``, no LayerNorm, ReLU MLPs.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _heads(x: Any, w: Any, b: Any) -> Any:
    """x [B, T, d_model] @ w [H, d_model, E] + b [H, E] -> [B, H, T, E] with one matmul."""
    B, T, _ = x.shape
    H, d, E = w.shape
    y = x.reshape(B * T, d) @ w.transpose(1, 0, 2).reshape(d, H * E)  # (B*T, H*E)
    return (y.reshape(B, T, H, E) + b).transpose(0, 2, 1, 3)      # (B, H, T, E)


def _linear(x: Any, w: Any, b: Any) -> Any:
    """x [B, T, n] @ w [n, m] + b as one 2-D matmul (one BLAS call, not B small ones)."""
    B, T, n = x.shape
    return (x.reshape(B * T, n) @ w).reshape(B, T, -1) + b


def forward(w: dict[str, Any], cfg: Any, ids: Any, xp: Any = np, keep: bool = False,
            ) -> tuple[Any, dict[str, list[Any]]]:
    """Logits [B, T, d_vocab_out] for ids [B, T]; with ``keep``, also the residual stream
    after every sublayer, every sublayer's output and every attention pattern."""
    B, T = ids.shape
    x = w["embed.W_E"][ids] + w["pos_embed.W_pos"][:T]           # (B, T, d_model)
    visible = (ids != cfg.pad_id)[:, None, None, :]               # (B, 1, 1, T) keys
    if cfg.causal:
        visible = visible & xp.tril(xp.ones((T, T), dtype=bool))  # (B, 1, T, T)
    trace: dict[str, list[Any]] = {"residuals": [x], "layer_outputs": [], "attention": [],
                                   "attn_logits": []}
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        q, k, v = (_heads(x, w[p + f"attn.W_{n}"], w[p + f"attn.b_{n}"]) for n in "QKV")
        scores = q @ k.transpose(0, 1, 3, 2) / cfg.attn_scale     # (B, H, T, T)
        scores = xp.where(visible, scores, -xp.inf)
        if keep:
            trace["attn_logits"].append(scores)
        scores = scores - scores.max(axis=-1, keepdims=True)
        pattern = xp.exp(scores)
        pattern /= pattern.sum(axis=-1, keepdims=True)
        H, E = v.shape[1], v.shape[3]
        z = (pattern @ v).transpose(0, 2, 1, 3).reshape(B, T, H * E)  # (B, T, H*E)
        attn_out = _linear(z, w[p + "attn.W_O"].reshape(H * E, -1), w[p + "attn.b_O"])
        x = mid = x + attn_out                                    # (B, T, d_model)
        hidden = xp.maximum(_linear(x, w[p + "mlp.W_in"], w[p + "mlp.b_in"]), 0)  # (B,T,d_mlp)
        mlp_out = _linear(hidden, w[p + "mlp.W_out"], w[p + "mlp.b_out"])
        x = x + mlp_out
        if keep:
            trace["attention"].append(pattern)
            trace["layer_outputs"] += [attn_out, mlp_out]
            trace["residuals"] += [mid, x]
    return _linear(x, w["unembed.W_U"], w["unembed.b_U"]), trace  # (B, T, d_vocab_out)


def trimmed(w: dict[str, np.ndarray], n_layers: int) -> dict[str, np.ndarray]:
    """The same model without padding: per layer, only the heads, head dimensions (the
    query-key and value-output ones separately) and MLP units that hold a nonzero
    weight. Dropping exact zeros changes no output; `CompiledModel.run` uses this."""
    out = dict(w)
    for i in range(n_layers):
        p = f"blocks.{i}."
        w_q, w_k, w_v, w_o = (w[p + f"attn.W_{n}"] for n in "QKVO")
        qk = (w_q != 0).any(axis=1) | (w_k != 0).any(axis=1)     # (H, E) used for scores
        ov = (w_v != 0).any(axis=1) | (w_o != 0).any(axis=2)     # (H, E) used for values
        heads = np.flatnonzero(qk.any(axis=1) | ov.any(axis=1))
        if len(heads) == 0:
            heads = np.arange(1)
        e_qk = int(np.flatnonzero(qk.any(axis=0)).max(initial=0)) + 1
        e_ov = int(np.flatnonzero(ov.any(axis=0)).max(initial=0)) + 1
        for n, e in (("Q", e_qk), ("K", e_qk), ("V", e_ov)):
            out[p + f"attn.W_{n}"] = w[p + f"attn.W_{n}"][heads, :, :e]
            out[p + f"attn.b_{n}"] = w[p + f"attn.b_{n}"][heads, :e]
        out[p + "attn.W_O"] = w_o[heads, :e_ov]
        units = np.flatnonzero((w[p + "mlp.W_in"] != 0).any(axis=0)
                               | (w[p + "mlp.W_out"] != 0).any(axis=1) | (w[p + "mlp.b_in"] != 0))
        out[p + "mlp.W_in"] = w[p + "mlp.W_in"][:, units]
        out[p + "mlp.b_in"] = w[p + "mlp.b_in"][units]
        out[p + "mlp.W_out"] = w[p + "mlp.W_out"][units]
    return out
