"""The forward pass of a compiled model, on numpy or CuPy (``xp``), batched over [B, T].

Weights follow TransformerLens: ``W_Q/W_K/W_V [n_heads, d_model, d_head]``,
``W_O [n_heads, d_head, d_model]``, ``W_in [d_model, d_mlp]``, ``W_out [d_mlp, d_model]``,
scores divided by ``attn_scale = sqrt(d_head)``, ReLU (or ``gelu_new``) MLPs. A model
compiled with a norm (``cfg.normalization_type`` "LN" or "RMS", weights ``ln1``, ``ln2``,
``ln_final`` or ``embed.ln`` with ``w [d_model]`` and ``b``) runs it pre-norm
(``x = x + attn(ln1(x))``, ``x = x + mlp(ln2(x))``, ``logits = ln_final(x) @ W_U``) or
post-norm (``x = embed.ln(x)``, ``x = ln1(x + attn(x))``, ``x = ln2(x + mlp(x))``), as
``cfg.norm_position`` says; see `rasplang.backend.normalize`.
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


def norm(x: Any, w: dict[str, Any], name: str, cfg: Any, xp: Any = np) -> Any:
    """The norm ``name`` (``blocks.0.ln1``, ...) of ``x [..., d_model]``, as TransformerLens
    and torch compute it; ``x`` itself when the model has no norm."""
    kind = getattr(cfg, "normalization_type", None)
    if kind is None:
        return x
    if kind == "LN":
        x = x - x.mean(axis=-1, keepdims=True)
        return x / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + cfg.eps) * w[name + ".w"] \
            + w[name + ".b"]
    return x / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + cfg.eps) * w[name + ".w"]


def activation(h: Any, cfg: Any, xp: Any = np) -> Any:
    """The MLP's activation: ReLU, or GPT-2's ``gelu_new``."""
    if getattr(cfg, "act_fn", "relu") == "gelu_new":
        from rasplang.backend.gelu import gelu_new

        return gelu_new(h, xp)
    return xp.maximum(h, 0)


def forward(w: dict[str, Any], cfg: Any, ids: Any, xp: Any = np, keep: bool = False,
            ) -> tuple[Any, dict[str, list[Any]]]:
    """Logits [B, T, d_vocab_out] for ids [B, T]; with ``keep``, also the residual stream
    after every sublayer, every sublayer's output and every attention pattern."""
    B, T = ids.shape
    post = getattr(cfg, "normalization_type", None) is not None and cfg.norm_position == "post"
    pre = getattr(cfg, "normalization_type", None) is not None and not post
    x = w["embed.W_E"][ids] + w["pos_embed.W_pos"][:T]           # (B, T, d_model)
    if post:
        x = norm(x, w, "embed.ln", cfg, xp)
    visible = (ids != cfg.pad_id)[:, None, None, :]               # (B, 1, 1, T) keys
    if cfg.causal:
        visible = visible & xp.tril(xp.ones((T, T), dtype=bool))  # (B, 1, T, T)
    trace: dict[str, list[Any]] = {"residuals": [x], "layer_outputs": [], "attention": [],
                                   "attn_logits": []}
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        r = norm(x, w, p + "ln1", cfg, xp) if pre else x            # what the heads read
        q, k, v = (_heads(r, w[p + f"attn.W_{n}"], w[p + f"attn.b_{n}"]) for n in "QKV")
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
        x = mid = norm(x + attn_out, w, p + "ln1", cfg, xp) if post else x + attn_out
        r = norm(x, w, p + "ln2", cfg, xp) if pre else x
        hidden = activation(_linear(r, w[p + "mlp.W_in"], w[p + "mlp.b_in"]), cfg, xp)
        mlp_out = _linear(hidden, w[p + "mlp.W_out"], w[p + "mlp.b_out"])  # (B, T, d_model)
        x = norm(x + mlp_out, w, p + "ln2", cfg, xp) if post else x + mlp_out
        if keep:
            trace["attention"].append(pattern)
            trace["layer_outputs"] += [attn_out, mlp_out]
            trace["residuals"] += [mid, x]
    if pre:
        x = norm(x, w, "ln_final", cfg, xp)
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
