"""Export to TransformerLens: a ``HookedTransformer`` (2.x, 3.x) or a ``TransformerBridge``
(4.x).

TransformerLens 2 and 3. The compiled weights already carry TransformerLens names and
shapes (``W_Q: [n_heads, d_model, d_head]``, ``W_O: [n_heads, d_head, d_model]``,
``W_in: [d_model, d_mlp]``, ``W_U: [d_model, d_vocab_out]``, ``ln1.w [d_model]``, ...),
and the forward pass is TransformerLens's: scores divided by ``sqrt(d_head)``, ReLU or
``gelu_new`` MLPs, no norm or a pre-norm LayerNorm/RMSNorm (a post-norm model's norms
are the identity on its residuals, so it runs pre-norm exactly, its ``embed.ln`` as
``ln_final``). So the export is a config (`transformer_lens_config`) and a
``load_state_dict``. Unlike tracr, the unembedding comes along: the HookedTransformer's
logits are the compiled model's.

TransformerLens 4 removed ``HookedTransformer``; its ``TransformerBridge`` wraps
Hugging Face models. The export writes the model's Hugging Face form
(`rasplang.backend.hf`: GPT-2 for a causal model, BERT otherwise) to a temporary
directory and boots the bridge on it, so it needs ``norm="layernorm"``; its logits are
the compiled model's (plus, for a categorical output that can be None, the constant
None logit, and padding logits of 0), its hooks TransformerLens's (``blocks.0.attn.hook_pattern``,
``blocks.0.hook_resid_post``, ...); its residual has the padding directions the
Hugging Face form adds (``model.config.rasplang["residual_labels"]`` on the bridge's
``original_model``).

Inputs are token ids: ``model.input_encoder.encode([[bos, *tokens]])`` (BOS first, no
padding), which TransformerLens takes as they are. The HookedTransformer has no
tokenizer (``default_prepend_bos=False``: nothing would prepend BOS to a string); the
bridge also takes text (``bridge("x y x")``, the tokens separated by spaces): its
tokenizer is the export's, whose template prepends BOS, and ``default_prepend_bos=True``
keeps it (False would strip it, and the first token would be read as BOS). Requires the
``transformer-lens`` extra (imported lazily).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from rasplang.backend.extras import import_extra


def _import_transformer_lens() -> tuple[Any, Any]:
    """``(transformer_lens, torch)``, or an ImportError that names the extra."""
    return import_extra("to_transformer_lens", "transformer-lens", "transformer_lens", "torch")


def has_hooked_transformer(tl: Any) -> bool:
    """Whether this TransformerLens still has ``HookedTransformer`` (2.x and 3.x)."""
    try:
        return hasattr(tl, "HookedTransformerConfig")
    except ImportError:  # TransformerLens 4 raises, naming its replacement
        return False


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
        act_fn=cfg.act_fn,
        normalization_type=cfg.normalization_type,
        eps=cfg.eps,
        attention_dir="causal" if cfg.causal else "bidirectional",
        positional_embedding_type="standard",
        default_prepend_bos=False,
        attn_only=False,
        model_name="rasplang-compiled",
        device=device,
        dtype=torch.float32 if dtype is None else dtype,
    )


def to_transformer_lens(model: Any, *, dtype: Any = None, device: str = "cpu") -> Any:
    """``model`` as a ``transformer_lens.HookedTransformer`` with the same weights (a
    ``TransformerBridge`` on TransformerLens 4, `to_bridge`).

    Its logits on ``input_encoder.encode([[bos, *tokens]])`` equal ``model.apply``'s
    (within float32 rounding; pass ``dtype=torch.float64`` for float64). Hooks work as
    usual, e.g. ``run_with_cache`` gives ``blocks.0.attn.hook_pattern`` and the residual
    stream ``blocks.0.hook_resid_post``, whose dimensions ``model.residual_labels`` name.
    A model exact only in float64 (``model.config.float64_only``) is refused in float32.
    """
    tl, torch = _import_transformer_lens()
    if not has_hooked_transformer(tl):
        return to_bridge(model, dtype=dtype, device=device)
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
    state = {name.replace("embed.ln.", "ln_final."): torch.as_tensor(
        np.asarray(w), dtype=config.dtype, device=device) for name, w in model.weights.items()}
    missing, unexpected = hooked.load_state_dict(state, strict=False)
    # Attention masks are buffers TransformerLens fills itself; every weight must load.
    params = {name for name, _ in hooked.named_parameters()}
    not_loaded = sorted(params & set(missing))
    if not_loaded or unexpected:
        raise ValueError(f"weights do not match the HookedTransformer: missing "
                         f"{not_loaded}, unexpected {sorted(unexpected)}")
    hooked.eval()
    return hooked


def to_bridge(model: Any, *, dtype: Any = None, device: str = "cpu") -> Any:
    """``model`` as a TransformerLens 4 ``TransformerBridge`` over its Hugging Face form
    (`rasplang.backend.hf.to_hf`: GPT-2 for a causal LayerNorm model, BERT otherwise), in
    ``dtype`` or the export's `rasplang.backend.hf.default_dtype`. It takes token ids, or
    text that its tokenizer turns into them with BOS first."""
    import tempfile

    from rasplang.backend import hf

    _import_transformer_lens()
    kind = hf.architecture_for(model)  # a LayerNorm model, else a ValueError saying so
    from transformer_lens.model_bridge import TransformerBridge

    with tempfile.TemporaryDirectory(prefix="rasplang-hf-") as path:
        hf.save_pretrained(model, path, dtype=dtype)
        bridge = TransformerBridge.boot_transformers(
            path, dtype=dtype or hf.default_dtype(model, kind), device=device)
    bridge.cfg.default_prepend_bos = True  # a string gets BOS once, from the tokenizer
    return bridge
