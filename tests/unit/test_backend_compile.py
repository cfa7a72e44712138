"""compile(): refusals, warnings, model layout, apply/run, circuit."""

from __future__ import annotations

import numpy as np
import pytest

import rasplang as rl
from rasplang import lib
from rasplang.backend import CompilerWarning, compile, compile_rasp_to_model


def test_refusals_list_every_node_with_its_reason():
    """One UnsupportedProgramError names every offending node before building weights."""
    shout = rl.numerical(rl.Map(lambda t: t.upper(), rl.tokens)).named("shout")
    fixed = rl.ConstantSOp(["a", "b", "a"]).named("fixed")
    whole = (rl.length + 0).named("whole")
    prog = rl.SequenceMap(lambda x, y: (x, y), rl.SequenceMap(lambda a, b: a, shout, fixed),
                          whole)
    with pytest.raises(rl.UnsupportedProgramError) as info:
        compile(prog, "ab", 3, causal=True)
    labels = {label for label, _ in info.value.problems}
    assert {"shout", "fixed", "length"} <= labels
    assert isinstance(info.value, NotImplementedError)


def test_length_is_refused_under_causal_masking():
    """length needs the whole input, so a causal model refuses it."""
    with pytest.raises(rl.UnsupportedProgramError, match="causal"):
        compile(rl.length + 0, "ab", 4, causal=True)


def test_selector_or_across_sops_compiles_exactly():
    """An `or` of selectors on different SOps compiles on product keys and queries."""
    sel = rl.select(rl.tokens, rl.tokens, "==") | rl.select(rl.indices, rl.indices, "<")
    prog = rl.selector_width(sel).named("width")
    model = compile(prog, "ab", 4)
    assert "(tokens, indices)" in model.circuit  # the inserted product, in the layer map
    xs = ["abab", "bbba", "a", "aab"]
    assert model.run(xs) == [rl.evaluate(prog, list(x)) for x in xs]


def test_product_beyond_the_limit_is_refused(monkeypatch):
    """A product selector past MAX_PRODUCT_VALUES is refused, naming the selector."""
    from rasplang.backend.chambers import selector

    monkeypatch.setattr(selector, "MAX_PRODUCT_VALUES", 7)
    sel = (rl.select(rl.tokens, rl.tokens, "==") | rl.select(rl.indices, rl.indices, "<")
           ).named("either")
    with pytest.raises(rl.UnsupportedProgramError, match=r"either.*8 values"):
        compile(rl.selector_width(sel), "ab", 4)


def test_selector_and_across_sops_compiles_exactly():
    """An `and` of selectors on different SOps adds up in one head and is exact."""
    sel = rl.select(rl.tokens, rl.tokens, "==") & rl.select(rl.indices, rl.indices, "<")
    prog = rl.selector_width(sel)
    model = compile(prog, "ab", 5)
    xs = ["abab", "bbbba", "a", "aabba"]
    assert model.run(xs) == [rl.evaluate(prog, list(x)) for x in xs]


def test_spread_aggregate_warns_with_its_label():
    """A categorical Aggregate that may select several values warns, naming the node."""
    prog = rl.Aggregate(rl.select(rl.tokens, rl.tokens, "=="), rl.tokens).named("spread")
    with pytest.warns(CompilerWarning, match="spread"):
        model = compile(prog, "ab", 4)
    assert model.run(["abba"]) == [list("abba")]


def test_node_without_values_warns_with_its_label():
    """A Map that raises on every value has no value set: compile warns once, naming it
    and its first error (not the nodes downstream, which have none either)."""
    never = rl.Map(lambda t: 1 / 0, rl.tokens).named("never")
    prog = rl.SequenceMap(lambda x, y: x, never, rl.tokens).named("after")
    with pytest.warns(CompilerWarning) as caught:
        compile(prog, "ab", 3)
    assert [str(w.message) for w in caught] == [
        "never: no value on any input (f('a') raised ZeroDivisionError: division by zero); "
        "evaluate raises on every input, so nothing the model computes can be checked against it"]


def test_bos_and_pad_must_not_be_tokens():
    """compiler_bos / compiler_pad inside the vocabulary is a ValueError."""
    with pytest.raises(ValueError, match="compiler_bos"):
        compile(rl.tokens, ["BOS", "a"], 3)


def test_model_layout_and_weight_shapes():
    """Weights are named and shaped as TransformerLens names them."""
    model = compile_rasp_to_model(lib.make_reverse(rl.tokens), "abcd", 6)
    c, w = model.config, model.weights
    assert w["embed.W_E"].shape == (c.d_vocab, c.d_model)
    assert w["pos_embed.W_pos"].shape == (c.n_ctx, c.d_model) and c.n_ctx == 7
    for i in range(c.n_layers):
        assert w[f"blocks.{i}.attn.W_Q"].shape == (c.n_heads, c.d_model, c.d_head)
        assert w[f"blocks.{i}.attn.W_O"].shape == (c.n_heads, c.d_head, c.d_model)
        assert w[f"blocks.{i}.mlp.W_in"].shape == (c.d_model, c.d_mlp)
    assert w["unembed.W_U"].shape == (c.d_model, c.d_vocab_out)
    assert len(model.residual_labels) == c.d_model
    assert model.residual_labels[:3] == ["one", "tokens:BOS", "tokens:a"]


def test_apply_keeps_bos_and_intermediates():
    """apply() decodes with BOS at position 0 and keeps residuals and patterns."""
    model = compile(lib.make_hist(), "abc", 5)
    out = model.apply(["BOS", "a", "b", "a"])
    assert out.decoded == ["BOS", 2, 1, 2]
    c = model.config
    assert len(out.residuals) == 1 + 2 * c.n_layers
    assert out.attention[0].shape == (1, c.n_heads, 4, 4)
    with pytest.raises(ValueError, match="BOS"):
        model.apply(["a", "b"])


def test_run_handles_mixed_lengths_and_bad_tokens():
    """run() pads a batch of different lengths; an unknown token names its position."""
    model = compile(lib.make_reverse(rl.tokens), "abc", 5)
    assert model.run(["abc", "", "cab", "a"]) == [list("cba"), [], list("bac"), ["a"]]
    with pytest.raises(ValueError, match="position 1"):
        model.run([["a", "z"]])
    with pytest.raises(ValueError, match="max_seq_len"):
        model.run(["abcabc"])


def test_circuit_names_layer_sublayer_and_dimensions():
    """Every SOp's circuit step names where it is computed and what it writes."""
    prog = lib.make_frac_prevs(rl.tokens == "x")
    model = compile(prog, "xy", 5)
    analysis = rl.analyze(prog, "xy", 5)
    for node, label in analysis.labels.items():
        if isinstance(node, rl.SOp):
            steps = model.circuit[label]
            assert steps and all(s.sublayer in ("embed", "attn", "mlp") for s in steps)
            assert all(model.residual_labels[i].startswith(label) or label in
                       ("tokens", "indices") for s in steps for i in s.writes)
    last = model.circuit[analysis.labels[prog]][-1]
    assert last.sublayer == "attn" and last.layer == model.config.n_layers - 1


def test_float32_and_float64_agree():
    """run(dtype=float32) decodes what float64 does."""
    prog = lib.make_sort(rl.tokens, rl.tokens, max_seq_len=6, min_key=1)
    model = compile(prog, [1, 2, 3], 6)  # distinct keys: no CompilerWarning
    xs = [[3, 1, 2], [2, 2, 1, 3, 3, 1]]
    assert model.run(xs, dtype=np.float32) == model.run(xs) == [rl.evaluate(prog, x)
                                                                   for x in xs]


def test_numerical_map_of_exact_means_is_exact():
    """numerical -> numerical Map discretised over the exact means (not tracr's x/w)."""
    frac = rl.numerical(rl.Aggregate(rl.select(rl.indices, rl.indices, "<="),
                                     rl.numerical(rl.tokens == "x"), default=0))
    prog = rl.numerical(rl.Map(lambda f: round(f * f, 6), frac))
    model = compile(prog, "xy", 7)
    for x in ["xyxxyyx", "yyyyyyx", "x"]:
        got, exp = model.run([x])[0], rl.evaluate(prog, list(x))
        assert np.allclose(got, exp, atol=1e-9)


def test_import_rasplang_compile_is_lazy():
    """rasplang.compile resolves to the backend's compile."""
    assert rl.compile is compile
