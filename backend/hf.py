"""Export to Hugging Face ``transformers``: a compiled model as GPT-2 or BERT.

A model compiled with ``norm="layernorm"`` has the layout of a standard transformer
(`rasplang.backend.normalize`), so it becomes one that ``transformers`` ships:

- a causal model (pre-norm) a ``GPT2LMHeadModel`` (``activation_function`` "relu" or
  "gelu_new", ``tie_word_embeddings=False``, ``layer_norm_epsilon`` the model's ``eps``);
- a non-causal model a ``BertForMaskedLM``: BERT's embedding LayerNorm and the
  LayerNorm after each residual addition (post-norm; the same weights are exact there,
  with the rounding `float64_only` checks), and a prediction head that passes the
  unembedding through exactly (`_bert_state`; ``hidden_act`` "relu" or "gelu_new", one
  token type whose embedding is zero).

Both split the residual into heads of one size (``n_heads * d_head == hidden size``);
the export pads the residual with zero directions (named ``pad:<i>`` in
``config.rasplang["residual_labels"]``) or the heads with zero dimensions, whichever is
smaller, and rescales ``W_Q`` for the new ``1 / sqrt(d_head)``: exact as before.

Outputs. The logits' first ``len(values)`` entries are the compiled model's. A
categorical output that can be None gets one more logit, constant ``1/2`` (read from
the ``one`` direction), so that argmax over the logits gives the program's output,
None included; `decode` maps ids to values. A numerical output's first logit is the
value (within float rounding) and, if it can be None, its second logit is the None flag
(``> 1/2``). ``config.id2label`` names those logits and ``config.rasplang`` holds the
output values, the vocabulary and the residual labels. The tokenizer
(`rasplang.backend.hf_tokenizer`) is a ``tokenizers`` WordLevel vocabulary (each token as
``str``, BOS, PAD, UNK), whitespace-split, that prepends BOS; ``AutoTokenizer`` loads it.
UNK's embedding row is NaN, so an unknown word gives NaN logits (every logit of that
text; ``torch.argmax`` reads them as 0), which `decode` refuses.

The directory. `save_pretrained` writes config.json (eager attention, so
``output_attentions=True`` works), model.safetensors (with the umask's mode, as the other
files), the tokenizer and a model card (`rasplang.backend.hf_card`). No pipeline gives
the program's output, and the classes cannot refuse one without custom code: GPT-2's
``generate()`` and the text-generation pipeline run and take an output's index for the
next token's id, BERT has no ``generate()`` (its text-generation pipeline loads
``BertLMHeadModel`` and does the same), and the fill-mask pipeline refuses both (no mask
token). The card and Tutorial 5 say so; tests/interop/test_hf_export.py checks it.

Dtype. The export is float32, or float64 where `float64_only` says why float32 is not
exact: a numerical output (torch's float32 LayerNorm rounds it beyond the compiler's
bound), BERT's post-norm rounding, or the model's own reason; the weights and
``config.dtype`` are saved in it, so ``from_pretrained`` loads it back in it. `verify`
checks a loaded export as a user runs it (`rasplang.backend.hf_verify`).

Requires the ``hf`` extra (``transformers``, ``tokenizers``, ``torch``; imported
lazily).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rasplang.backend.extras import import_extra
from rasplang.backend.hf_tokenizer import (  # noqa: F401 (the tokenizer's API, here too)
    check_inputs,
    encode,
    token_strings,
    tokenizer,
    tokenizer_from_config,
    unk_string,
)


def _import_hf() -> tuple[Any, Any]:
    """``(transformers, torch)``, or an ImportError that names the extra."""
    return import_extra("the Hugging Face export", "hf", "transformers", "torch")


def architecture_for(model: Any, architecture: str | None = None) -> str:
    """"gpt2" (causal) or "bert" (non-causal), checking ``architecture`` and the norm."""
    cfg = model.config
    if architecture not in (None, "gpt2", "bert"):
        raise ValueError(f"architecture must be 'gpt2', 'bert' or None, got {architecture!r}")
    if cfg.normalization_type != "LN":
        raise ValueError("the Hugging Face export needs LayerNorm, as GPT-2 and BERT have: "
                         f"this model has normalization_type={cfg.normalization_type!r}; "
                         "compile it with norm='layernorm'")
    if architecture == "gpt2" and not cfg.causal:
        raise ValueError("this model is not causal, and GPT-2 attends causally: export it as "
                         "a bidirectional encoder (architecture='bert' or None, a "
                         "BertForMaskedLM), or compile with causal=True")
    if architecture == "bert" and cfg.causal:
        raise ValueError("this model is causal, and BERT attends bidirectionally: export it "
                         "as GPT-2 (architecture='gpt2' or None)")
    return "gpt2" if cfg.causal else "bert"


def float64_only(model: Any, kind: str) -> str:
    """Why the export of ``model`` as ``kind`` ("gpt2", "bert") is exact in float64 only
    ("" when float32 is exact too): the model's own reason, a numerical output, or for
    BERT the rounding of its post-norm form (`rasplang.backend.normalize.rounding_problem`;
    the residual's coordinate sum is bounded through ``eps >= 2^56 a1^2 / d_model``).

    A numerical output is a residual coordinate read off as it is, so the export's own
    float32 rounding reaches the user, and it is not the rounding the compiler bounds:
    torch's LayerNorm computes the mean by Welford updates, which are not exact even on
    the residuals whose sum is exactly 0 (numpy's sum is exact on them). The
    ``norm:zero`` direction cancels that mean in exact arithmetic, but the readers'
    products with large query weights round it and an Aggregate's pattern moves:
    ``frac_prevs``'s GPT-2 export in float32 is off by 1.9e-6 at max_seq_len 5 and
    7.3e-6 at 48 (more than verify's float32 tolerance), rasplang's own float32 forward
    by 2e-8 and 9e-8, the float64 export by 1e-14. A categorical output is read by argmax
    with a margin of 1/2, which float32 keeps."""
    from rasplang.backend import normalize

    cfg = model.config
    if cfg.float64_only:
        return cfg.float64_only
    if model.output_encoder.numerical:
        return ("its output is numerical, and torch's float32 LayerNorm rounds it beyond "
                "the compiler's float32 bound")
    if kind != "bert":
        return ""
    a1 = math.sqrt(cfg.eps * cfg.d_model) / 2.0 ** (normalize.EPS_BITS / 2)
    problem = normalize.rounding_problem(normalize.post_norm_count(cfg.n_layers), a1, 24)
    return f"as BERT, {problem}" if problem else ""


def default_dtype(model: Any, kind: str) -> Any:
    """The torch dtype the export uses when none is asked for: float64 where
    `float64_only` gives a reason, else float32."""
    _, torch = _import_hf()
    return torch.float64 if float64_only(model, kind) else torch.float32


def _layout(d: int, h: int, e: int) -> tuple[int, int]:
    """``(heads, d_head)`` with ``heads * d_head >= d``, ``heads >= h``, ``d_head >= e``,
    of the smallest product (then the fewest heads)."""
    by_heads = (max(h, -(-d // e)), e)
    by_width = (h, max(e, -(-d // h)))
    return min(by_heads, by_width, key=lambda x: (x[0] * x[1], x[0]))


def padded_weights(model: Any, min_width: int = 0,
                   ) -> tuple[dict[str, np.ndarray], int, int, list[str], list[Any]]:
    """The model's weights padded to ``(heads, d_head)`` with ``heads * d_head`` residual
    directions (at least ``min_width``), ``W_U`` with the None logit when needed; also
    ``heads``, ``d_head``, the residual labels and the output values (one per logit)."""
    cfg, w = model.config, model.weights
    heads, e = _layout(max(cfg.d_model, min_width), cfg.n_heads, cfg.d_head)
    d = heads * e
    extra = d - cfg.d_model
    out: dict[str, np.ndarray] = {}

    def resid(a: np.ndarray, axis: int) -> np.ndarray:
        pad = [(0, 0)] * a.ndim
        pad[axis] = (0, extra)
        return np.pad(a, pad)

    for name, a in w.items():
        if name.endswith(("W_E", "W_pos", "b_O", "b_out", ".b")):
            out[name] = resid(a, a.ndim - 1)
        elif name.endswith(".w"):
            out[name] = np.concatenate([a, np.full(extra, a[0])])
        elif name.endswith(("W_in", "W_U")):
            out[name] = resid(a, 0)
        elif name.endswith("W_out"):
            out[name] = resid(a, 1)
        elif name.endswith(("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")):
            a = a * math.sqrt(e / cfg.d_head) if name.endswith("W_Q") else a
            a = a * math.sqrt(e / cfg.d_head) if name.endswith("b_Q") else a
            grow = [(0, heads - cfg.n_heads)] + [(0, 0)] * (a.ndim - 1)
            a = np.pad(a, grow)
            if name.endswith(("W_Q", "W_K", "W_V")):      # [H, d, E]
                a = np.pad(a, [(0, 0), (0, extra), (0, e - cfg.d_head)])
            elif name.endswith("W_O"):                     # [H, E, d]
                a = np.pad(a, [(0, 0), (0, e - cfg.d_head), (0, extra)])
            else:                                          # [H, E]
                a = np.pad(a, [(0, 0), (0, e - cfg.d_head)])
            out[name] = a
        else:
            out[name] = a
    labels = [*model.residual_labels, *(f"pad:{i}" for i in range(extra))]
    enc = model.output_encoder
    values: list[Any] = list(enc.values) if not enc.numerical else ["value", *enc.values]
    if not enc.numerical and _may_be_none(model):
        # 1/2 of the ``one`` direction and, as every reader, the norm's rounded mean back;
        # a rotated or compressed model reads them through its basis matrix.
        features = list(getattr(model, "features", ()) or model.residual_labels)
        half = {"one": 0.5, **({"norm:zero": -0.5} if "norm:zero" in features else {})}
        one = np.zeros(d)
        if getattr(model, "projection", None) is not None:
            one[: cfg.d_model] = model.reader(half)
        else:
            for label, c in half.items():
                one[labels.index(label)] = c
        out["unembed.W_U"] = np.concatenate([out["unembed.W_U"], one[:, None]], axis=1)
        out["unembed.b_U"] = np.append(out["unembed.b_U"], 0.0)
        values.append(None)
    return out, heads, e, labels, values


def _may_be_none(model: Any) -> bool:
    """Whether a categorical output can decode to None (taken as yes unless the program's
    output value set says otherwise)."""
    program = model.program
    if program is None:
        return True
    from rasplang.analysis import analyze

    a = analyze(program, model.config.vocab, model.config.max_seq_len)
    return None in a.value_sets[program]


def _rasplang_info(model: Any, labels: list[str], values: list[Any]) -> dict[str, Any]:
    from rasplang.backend.metadata import to_json

    cfg = model.config
    return {"vocab": [to_json(v, "vocab") for v in cfg.vocab],
            "bos": to_json(cfg.bos, "bos"), "pad": to_json(cfg.pad, "pad"),
            "unk": unk_string(token_strings(model)),
            "causal": cfg.causal, "max_seq_len": cfg.max_seq_len,
            "numerical": bool(model.output_encoder.numerical),
            "outputs": [to_json(v, "outputs") for v in values],
            "residual_labels": labels, "program_sha256": cfg.program_sha256}


def output_labels(numerical: bool, values: list[Any]) -> list[str]:
    """``id2label``'s names of the output logits: each value as ``str`` (``repr`` for
    all when two would print alike); for a numerical output ``"value"`` and, if the
    output can be None, ``"None"`` (its flag, above 1/2 when the output is None)."""
    if numerical:
        return ["value", "None"][: len(values)]
    text = [str(v) for v in values]
    return text if len(set(text)) == len(text) else [repr(v) for v in values]


def config_vocab(config: Any) -> list[Any]:
    """An exported model's vocabulary, read from its ``config.rasplang``."""
    from rasplang.backend.metadata import from_json

    return [from_json(v, "vocab") for v in config.rasplang["vocab"]]


def to_hf(model: Any, *, architecture: str | None = None, dtype: Any = None) -> Any:
    """``model`` as a ``transformers`` model with the same logits (see the module
    docstring): ``GPT2LMHeadModel`` for a causal model, ``BertForMaskedLM``
    otherwise. ``dtype`` is a torch dtype (default `default_dtype`: float32, or float64
    for a model whose export is exact in float64 only (`float64_only`: a numerical
    output among others), which refuses float32)."""
    kind = architecture_for(model, architecture)
    transformers, torch = _import_hf()
    why = float64_only(model, kind)
    if dtype is None:
        dtype = default_dtype(model, kind)
    if dtype != torch.float64 and why:
        raise ValueError(f"this model is exact in float64 only ({why}); export it with "
                         "dtype=torch.float64")
    cfg = model.config
    reads = int(np.count_nonzero(np.any(model.weights["unembed.W_U"] != 0, axis=1)))
    w, heads, e, labels, values = padded_weights(model, 2 * (reads + 1) if kind == "bert"
                                                 else 0)
    d = heads * e
    act = cfg.act_fn
    info = _rasplang_info(model, labels, values)
    n_out = w["unembed.W_U"].shape[1]
    names = output_labels(info["numerical"], values)
    common = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in
                                                                enumerate(names)},
              "attn_implementation": "eager", "pad_token_id": cfg.pad_id,
              "bos_token_id": cfg.d_vocab - 2, "vocab_size": max(cfg.d_vocab + 1, n_out)}
    if kind == "gpt2":
        config = transformers.GPT2Config(
            n_positions=cfg.n_ctx, n_embd=d,
            n_layer=cfg.n_layers, n_head=heads, n_inner=cfg.d_mlp, activation_function=act,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=cfg.eps,
            tie_word_embeddings=False, eos_token_id=None, use_cache=False, **common)
        config.rasplang = info
        state = _gpt2_state(w, cfg, config.vocab_size, d)
        hf = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.BertConfig(
            hidden_size=d, num_hidden_layers=cfg.n_layers,
            num_attention_heads=heads, intermediate_size=cfg.d_mlp, hidden_act=act,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            max_position_embeddings=cfg.n_ctx, type_vocab_size=1, layer_norm_eps=cfg.eps,
            tie_word_embeddings=False, **common)
        config.rasplang = info
        state = _bert_state(w, cfg, d, config.vocab_size)
        hf = transformers.BertForMaskedLM(config)
    tensors = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=dtype) for k, v in state.items()}
    hf = hf.to(dtype)
    missing, unexpected = hf.load_state_dict(tensors, strict=False)
    params = {name for name, _ in hf.named_parameters()}
    if sorted(params & set(missing)) or unexpected:
        raise ValueError(f"weights do not match {type(hf).__name__}: missing "
                         f"{sorted(params & set(missing))}, unexpected {sorted(unexpected)}")
    return hf.eval()


def _cat_heads(a: np.ndarray) -> np.ndarray:
    """``[H, d, E] -> [d, H * E]`` (head-major columns, as transformers splits them)."""
    h, d, e = a.shape
    return a.transpose(1, 0, 2).reshape(d, h * e)


def _embedding(w: dict[str, np.ndarray], cfg: Any, vocab_size: int, d: int) -> np.ndarray:
    """The token embedding ``[vocab_size, d]``: the compiled rows, then UNK's row of NaN
    (`rasplang.backend.hf_tokenizer`: an unknown word gives NaN logits, not a plausible
    output), then zeros (ids no tokenizer gives: the rows up to the output logits)."""
    wte = np.zeros((vocab_size, d))
    wte[: cfg.d_vocab] = w["embed.W_E"]
    wte[cfg.d_vocab] = np.nan
    return wte


def _gpt2_state(w: dict[str, np.ndarray], cfg: Any, vocab_size: int, d: int,
                ) -> dict[str, np.ndarray]:
    """GPT-2's state dict (``Conv1D`` weights are ``[in, out]``)."""
    wte = _embedding(w, cfg, vocab_size, d)
    w_u = w["unembed.W_U"]
    if np.any(w["unembed.b_U"]):
        raise ValueError("GPT-2's lm_head has no bias, but this model's unembed.b_U is nonzero")
    lm_head = np.zeros((vocab_size, d))
    lm_head[: w_u.shape[1]] = w_u.T
    s = {"transformer.wte.weight": wte, "transformer.wpe.weight": w["pos_embed.W_pos"],
         "transformer.ln_f.weight": w["ln_final.w"], "transformer.ln_f.bias": w["ln_final.b"],
         "lm_head.weight": lm_head}
    for i in range(cfg.n_layers):
        p, t = f"blocks.{i}.", f"transformer.h.{i}."
        s[t + "ln_1.weight"], s[t + "ln_1.bias"] = w[p + "ln1.w"], w[p + "ln1.b"]
        s[t + "ln_2.weight"], s[t + "ln_2.bias"] = w[p + "ln2.w"], w[p + "ln2.b"]
        s[t + "attn.c_attn.weight"] = np.concatenate(
            [_cat_heads(w[p + f"attn.W_{n}"]) for n in "QKV"], axis=1)
        s[t + "attn.c_attn.bias"] = np.concatenate([w[p + f"attn.b_{n}"].ravel() for n in "QKV"])
        h, e, _ = w[p + "attn.W_O"].shape
        s[t + "attn.c_proj.weight"] = w[p + "attn.W_O"].reshape(h * e, d)
        s[t + "attn.c_proj.bias"] = w[p + "attn.b_O"]
        s[t + "mlp.c_fc.weight"], s[t + "mlp.c_fc.bias"] = w[p + "mlp.W_in"], w[p + "mlp.b_in"]
        s[t + "mlp.c_proj.weight"] = w[p + "mlp.W_out"]
        s[t + "mlp.c_proj.bias"] = w[p + "mlp.b_out"]
    return s


def _bert_state(w: dict[str, np.ndarray], cfg: Any, d: int, vocab_size: int,
                ) -> dict[str, np.ndarray]:
    """BertForMaskedLM's state dict (``nn.Linear`` weights are ``[out, in]``).

    The prediction head computes ``decoder(LayerNorm(act(dense(x))))``. ``dense`` sends
    each residual direction ``j`` the unembedding reads to the pair ``(x_j, -x_j)`` in
    hidden units ``2i, 2i + 1`` and the decoder reads ``h_{2i} - h_{2i+1}``: for ReLU and
    GELU alike ``act(x) - act(-x) = x`` (GELU: ``x Phi(x) + x Phi(-x)``; the tanh form is
    odd in the same way). The head's LayerNorm has the model's ``eps`` and gains
    ``sqrt(eps)``: the pairs' mean is subtracted from both units of a pair and cancels in
    their difference, and their norm is far below ``eps``. So the logits are the
    unembedding's, to float rounding."""
    e = "bert.embeddings."
    w_u, b_u = w["unembed.W_U"], w["unembed.b_U"]
    wte = _embedding(w, cfg, vocab_size, d)
    rows = np.flatnonzero(np.any(w_u != 0, axis=1))
    dense, decoder = np.zeros((d, d)), np.zeros((vocab_size, d))
    for i, r in enumerate(rows):
        dense[2 * i, r], dense[2 * i + 1, r] = 1.0, -1.0
        decoder[: w_u.shape[1], 2 * i] = w_u[r]
        decoder[: w_u.shape[1], 2 * i + 1] = -w_u[r]
    bias = np.zeros(vocab_size)
    bias[: len(b_u)] = b_u
    ln = "embed.ln" if "embed.ln.w" in w else "ln_final"  # a pre-norm model's gains
    gain = w[ln + ".w"][0]
    h = "cls.predictions."
    s = {e + "word_embeddings.weight": wte,
         e + "position_embeddings.weight": w["pos_embed.W_pos"],
         e + "token_type_embeddings.weight": np.zeros((1, d)),
         e + "LayerNorm.weight": w[ln + ".w"], e + "LayerNorm.bias": w[ln + ".b"],
         h + "transform.dense.weight": dense, h + "transform.dense.bias": np.zeros(d),
         h + "transform.LayerNorm.weight": np.full(d, gain),
         h + "transform.LayerNorm.bias": np.zeros(d),
         h + "decoder.weight": decoder, h + "decoder.bias": bias, h + "bias": bias}
    for i in range(cfg.n_layers):
        p, t = f"blocks.{i}.", f"bert.encoder.layer.{i}."
        for n, name in (("Q", "query"), ("K", "key"), ("V", "value")):
            s[t + f"attention.self.{name}.weight"] = _cat_heads(w[p + f"attn.W_{n}"]).T
            s[t + f"attention.self.{name}.bias"] = w[p + f"attn.b_{n}"].ravel()
        h, e_, _ = w[p + "attn.W_O"].shape
        s[t + "attention.output.dense.weight"] = w[p + "attn.W_O"].reshape(h * e_, d).T
        s[t + "attention.output.dense.bias"] = w[p + "attn.b_O"]
        s[t + "attention.output.LayerNorm.weight"] = w[p + "ln1.w"]
        s[t + "attention.output.LayerNorm.bias"] = w[p + "ln1.b"]
        s[t + "intermediate.dense.weight"] = w[p + "mlp.W_in"].T
        s[t + "intermediate.dense.bias"] = w[p + "mlp.b_in"]
        s[t + "output.dense.weight"] = w[p + "mlp.W_out"].T
        s[t + "output.dense.bias"] = w[p + "mlp.b_out"]
        s[t + "output.LayerNorm.weight"] = w[p + "ln2.w"]
        s[t + "output.LayerNorm.bias"] = w[p + "ln2.b"]
    return s


def save_pretrained(model: Any, path: str | os.PathLike, *, architecture: str | None = None,
                    dtype: Any = None, report: Any = None) -> Path:
    """Write ``model`` as a Hugging Face model directory: config.json (with
    ``attn_implementation`` "eager", so ``output_attentions=True`` returns the patterns),
    model.safetensors, the tokenizer (tokenizer.json, tokenizer_config.json;
    `rasplang.backend.hf_tokenizer`) and a model card, README.md
    (`rasplang.backend.hf_card`; ``report``, a `rasplang.verify` report, is quoted in it).
    ``AutoTokenizer`` and ``AutoModelForCausalLM`` (GPT-2) or ``AutoModelForMaskedLM``
    (BERT) load it with ``from_pretrained(path)``. Every file gets the mode config.json
    was created with (the umask's), model.safetensors included."""
    import json

    from rasplang.backend import hf_card

    path = Path(path)
    hf = to_hf(model, architecture=architecture, dtype=dtype)
    hf.save_pretrained(path)
    config = path / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data["attn_implementation"] = "eager"  # transformers does not save it
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tokenizer(model).save_pretrained(path)
    (path / "README.md").write_text(hf_card.card(model, hf, report), encoding="utf-8")
    mode = config.stat().st_mode & 0o777
    for weights in path.glob("*.safetensors"):  # transformers writes them 0600
        weights.chmod(mode)
    return path


def decode(config: Any, logits: Any, inputs: Any = None) -> list[list[Any]]:
    """The program's outputs from an exported model's logits ``[B, T, n]`` (BOS first):
    argmax over the output values for a categorical output, the first logit (None where
    the second is above 1/2) for a numerical one. ``config`` is the model's
    ``config`` (its ``rasplang`` entry).

    ``inputs`` (optional) is what the model ran on: the tokenizer's batch or its
    ``input_ids``. With it, each row is checked (`rasplang.backend.hf_tokenizer.check_inputs`:
    BOS first, right padding, no unknown word) and cut to its own length. NaN logits (an
    unknown word, a special token in the text) and a float16 or bfloat16 model (too narrow
    for its weights: all NaN, or rounded) are refused with a ValueError."""
    info = config.rasplang
    kind = str(getattr(logits, "dtype", ""))
    if kind.endswith(("float16", "bfloat16")):
        raise ValueError(f"the logits are {kind.removeprefix('torch.')}: this model is exact "
                         "in float32 and float64 only (its LayerNorm epsilon and weights do not "
                         "fit in 16 bits); load it without dtype=, in the dtype it was saved in")
    logits = as_array(logits)
    lengths = np.full(len(logits), logits.shape[1])
    if inputs is not None:
        mapping = isinstance(inputs, Mapping)
        ids = inputs["input_ids"] if mapping else inputs
        mask = inputs.get("attention_mask") if mapping else None
        lengths = check_inputs(info, ids, mask) - 1
    for r, bad in enumerate(not_finite(info, logits, lengths)):
        if len(bad):
            raise ValueError(f"row {r}: the logits are not finite at positions "
                             f"{(bad + 1).tolist()}: the input holds a word outside the "
                             "vocabulary or a special token inside the text (the tokenizer "
                             "reads both as UNK, whose embedding is NaN); pass the batch to "
                             "decode, or use rasplang.backend.hf.encode, to have it named")
    rows = outputs(info, logits)
    return rows if inputs is None else [row[:n] for row, n in zip(rows, lengths.tolist())]


def as_array(logits: Any) -> np.ndarray:
    """Logits ``[B, T, n]`` (a torch tensor or an array) as float64, BOS's row dropped."""
    return np.asarray(logits.detach().cpu().double() if hasattr(logits, "detach")
                      else logits, dtype=float)[:, 1:]


def not_finite(info: dict[str, Any], logits: np.ndarray, lengths: Any) -> list[np.ndarray]:
    """Per row, the positions (BOS's row dropped) among its first ``lengths[r]`` whose
    output logits are NaN or infinite."""
    n_out = len(info["outputs"])
    return [np.flatnonzero(~np.all(np.isfinite(row[:n, :n_out]), axis=-1))
            for row, n in zip(logits, lengths)]


def outputs(info: dict[str, Any], logits: np.ndarray) -> list[list[Any]]:
    """`decode`'s outputs of logits from `as_array`, unchecked."""
    from rasplang.backend.metadata import from_json

    n_out = len(info["outputs"])
    if info["numerical"]:
        out = logits[..., 0].astype(object)
        if n_out > 1:
            out[logits[..., 1] > 0.5] = None
        return out.tolist()
    values = [from_json(v, "outputs") for v in info["outputs"]]
    idx = logits[..., :n_out].argmax(axis=-1)
    return [[values[i] for i in row] for row in idx.tolist()]


def verify(program: Any, model: Any, *, tokenizer: Any = None, max_seq_len: int | None = None,
           **kwargs: Any) -> Any:
    """`rasplang.verify` of an exported ``transformers`` model (loaded back with
    ``from_pretrained``) on its own vocabulary, its ``max_seq_len`` (or a smaller one) and
    its masking, run as a user runs it: text, ``tokenizer`` (default: the one saved beside
    the model, `rasplang.backend.hf_verify`), the model, `decode`. ``kwargs`` go to
    `rasplang.verify` (``exhaustive``, ``samples``, ``seed``, ``batch_size``, ...)."""
    from rasplang.backend.hf_verify import Exported
    from rasplang.verification import verify as verify_model

    info = model.config.rasplang
    target = model if tokenizer is None else Exported(model, tokenizer)
    return verify_model(program, config_vocab(model.config), max_seq_len or info["max_seq_len"],
                        model=target, causal=bool(info["causal"]), **kwargs)


def write_directory(model: Any, path: str | os.PathLike, error: type = ValueError) -> Path:
    """`save_pretrained` for the command line: a missing extra, a model the export refuses
    or a directory that cannot be written becomes one ``error`` with the reason."""
    try:
        return save_pretrained(model, path)
    except (ImportError, ValueError) as exc:
        raise error(f"cannot export to Hugging Face: {exc}") from exc
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from exc
