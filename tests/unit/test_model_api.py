"""The model object as a user meets it: a one-line repr, tracr's names, lazy subpackages."""

from __future__ import annotations

import numpy as np

import rasplang as rl
from rasplang import lib


def _hist():
    return rl.compile(lib.make_hist(), ["a", "b"], 4)


def test_repr_is_one_line_summary():
    """repr(model) names the program and its shape, not every weight."""
    model = _hist()
    text = repr(model)
    assert "\n" not in text and len(text) < 200
    assert text.startswith("CompiledModel('hist': 1 layer, d_model ")
    assert f"{model.n_params:,} parameters" in text


def test_tracr_output_names_are_aliases():
    """apply's result answers to tracr's names with the same arrays."""
    out = _hist().apply(["BOS", "a", "b", "a"])
    assert out.unembedded_output is out.logits
    assert out.transformer_output is out.residuals[-1]
    assert out.input_embeddings is out.residuals[0]
    assert len(out.attn_logits) == len(out.attention)


def test_attn_logits_softmax_to_the_pattern():
    """attn_logits are the scores before the softmax: their softmax is the pattern."""
    out = _hist().apply(["BOS", "a", "b", "a"])
    for scores, pattern in zip(out.attn_logits, out.attention):
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        assert np.allclose(e / e.sum(axis=-1, keepdims=True), pattern)


def test_tracr_params_hold_the_same_weights():
    """model.params lays out each weight as tracr's Haiku params: [d_model, heads * d_head]."""
    model = _hist()
    params = model.params
    w_q = model.weights["blocks.0.attn.W_Q"]                     # (n_heads, d_model, d_head)
    h, d, e = w_q.shape
    query = params["transformer/layer_0/attn/query"]["w"]
    assert query.shape == (d, h * e)
    for head in range(h):
        assert np.array_equal(query[:, head * e:(head + 1) * e], w_q[head])
    assert np.array_equal(params["transformer/layer_0/mlp/linear_1"]["w"],
                          model.weights["blocks.0.mlp.W_in"])
    assert np.array_equal(params["token_embed"]["embeddings"], model.weights["embed.W_E"])


def test_decoding_map_is_index_to_value():
    """output_encoder.decoding_map maps each logit index to its value, as in tracr."""
    model = _hist()
    assert model.output_encoder.decoding_map == dict(enumerate(model.output_encoder.values))


def test_subpackages_are_lazy_attributes():
    """rl.lib, rl.interpreter and rl.backend work without importing them first."""
    assert rl.lib.make_hist is lib.make_hist
    assert callable(rl.interpreter.evaluate_batch)
    for name in ("compile", "load", "verify", "lib"):
        assert name in dir(rl)
    assert {"compile", "load", "verify"} <= set(rl.__all__)
