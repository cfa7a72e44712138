"""Export to TransformerLens: a compiled model as a ``HookedTransformer``.

The compiled weights already carry TransformerLens names and shapes
(``W_Q: [n_heads, d_model, d_head]``, ``W_O: [n_heads, d_head, d_model]``,
``W_in: [d_model, d_mlp]``, ``W_U: [d_model, d_vocab_out]``, ...), and the forward pass
is TransformerLens's: no LayerNorm, ReLU MLPs, scores divided by ``sqrt(d_head)``. So the
export is a config (`transformer_lens_config`) and a ``load_state_dict``. Unlike tracr,
the unembedding comes along: the HookedTransformer's logits are the compiled model's.

Inputs are token ids: ``model.input_encoder.encode([[bos, *tokens]])`` (BOS first, no
padding; TransformerLens must not prepend its own BOS, hence
``default_prepend_bos=False``). Requires the ``transformer-lens`` extra
(TransformerLens 2.x or 3.x, which still have ``HookedTransformer``; imported lazily).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

_EXTRA_HINT = ("install the extra: pip install 'rasplang[transformer-lens]' "
               "(on CPU, install torch's CPU wheel first)")


def _import_transformer_lens() -> tuple[Any, Any]:
    """``(transformer_lens, torch)``, or an ImportError that says how to install them."""
    try:
        import torch
        import transformer_lens
    except ImportError as exc:
        raise ImportError(f"to_transformer_lens needs transformer_lens and torch ({exc}): "
                          f"{_EXTRA_HINT}") from exc
    if not hasattr(transformer_lens, "HookedTransformerConfig"):
        raise ImportError(f"transformer_lens {getattr(transformer_lens, '__version__', '?')} "
                          "has no HookedTransformer (removed in 4.0); install "
                          "'transformer-lens>=2,<4'")
    return transformer_lens, torch


def transformer_lens_config(model: Any, *, dtype: Any = None, device: str = "cpu") -> Any:
    """The ``HookedTransformerConfig`` matching ``model.config`` (float32 by default)."""
    tl, torch = _import_transformer_lens()
    cfg = model.config
    return tl.HookedTransformerConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_ctx=cfg.n_ctx,
        d_head=cfg.d_head,
        n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out,
        act_fn="relu",
        normalization_type=None,
        attention_dir="causal" if cfg.causal else "bidirectional",
        positional_embedding_type="standard",
        default_prepend_bos=False,
        attn_only=False,
        model_name="rasplang-compiled",
        device=device,
        dtype=torch.float32 if dtype is None else dtype,
    )


def to_transformer_lens(model: Any, *, dtype: Any = None, device: str = "cpu") -> Any:
    """``model`` as a ``transformer_lens.HookedTransformer`` with the same weights.

    Its logits on ``input_encoder.encode([[bos, *tokens]])`` equal ``model.apply``'s
    (within float32 rounding; pass ``dtype=torch.float64`` for float64). Hooks work as
    usual, e.g. ``run_with_cache`` gives ``blocks.0.attn.hook_pattern`` and the residual
    stream ``blocks.0.hook_resid_post``, whose dimensions ``model.residual_labels`` name.
    A model exact only in float64 (``model.config.float64_only``) is refused in float32.
    """
    tl, torch = _import_transformer_lens()
    config = transformer_lens_config(model, dtype=dtype, device=device)
    if config.dtype != torch.float64 and model.config.float64_only:
        raise ValueError(f"this model is exact in float64 only ({model.config.float64_only});"
                         " export it with dtype=torch.float64")
    with warnings.catch_warnings():
        # TransformerLens 3 deprecates HookedTransformer in favour of TransformerBridge,
        # which wraps HuggingFace checkpoints; a compiled model is not one.
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated",
                                DeprecationWarning)
        hooked = tl.HookedTransformer(config)
    state = {name: torch.as_tensor(np.asarray(w), dtype=config.dtype, device=device)
             for name, w in model.weights.items()}
    missing, unexpected = hooked.load_state_dict(state, strict=False)
    # Attention masks are buffers TransformerLens fills itself; every weight must load.
    params = {name for name, _ in hooked.named_parameters()}
    not_loaded = sorted(params & set(missing))
    if not_loaded or unexpected:
        raise ValueError(f"weights do not match the HookedTransformer: missing "
                         f"{not_loaded}, unexpected {sorted(unexpected)}")
    hooked.eval()
    return hooked
