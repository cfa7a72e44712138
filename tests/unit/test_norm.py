"""Exact LayerNorm / RMSNorm and GELU at compile time (no torch needed)."""

import itertools

import numpy as np
import pytest

import rasplang as rl
from rasplang.backend import gelu, normalize
from rasplang.lib import PROGRAMS

pytestmark = pytest.mark.filterwarnings("ignore::rasplang.backend.compiler.CompilerWarning")


def _compile(name, n=4, **kw):
    entry = PROGRAMS[name]
    return entry, rl.compile(entry.build(), entry.vocab, n, **kw)


def _inputs(entry, n):
    return [list(s) for k in range(1, n + 1) for s in itertools.product(entry.vocab, repeat=k)]


def _layer_norm(x, w, b, eps):
    """LayerNorm written out independently of the forward pass."""
    mu = x.sum(axis=-1, keepdims=True) / x.shape[-1]
    var = ((x - mu) ** 2).sum(axis=-1, keepdims=True) / x.shape[-1]
    return (x - mu) / np.sqrt(var + eps) * w + b


@pytest.mark.parametrize(("name", "causal"), [("frac_prevs", True), ("sort_unique", False),
                                              ("hist", False), ("shuffle_dyck", True)])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_layernorm_model_matches_evaluate(name, causal, activation):
    """Every input up to length 4: the normalised model's outputs are the program's."""
    entry, model = _compile(name, causal=causal, norm="layernorm", activation=activation)
    for xs in _inputs(entry, 4)[:400]:
        want = rl.evaluate(entry.build(), xs, causal=causal)
        got = model.run([xs])[0]
        if model.output_encoder.numerical:
            np.testing.assert_allclose(np.array(got, float), np.array(want, float), atol=1e-6)
        else:
            assert got == want, xs


@pytest.mark.parametrize("causal", [True, False])
def test_residual_has_mean_zero_and_the_norm_is_the_identity(causal):
    """Every residual the model produces sums to 0, and LayerNorm (written out here)
    returns it unchanged to 1e-12 relative: the construction's two claims."""
    entry, model = _compile("sort_unique", causal=causal, norm="layernorm")
    cfg, w = model.config, model.weights
    assert cfg.normalization_type == "LN" and cfg.norm_position == "pre"
    gain = w["blocks.0.ln1.w"][0]
    assert gain * gain == cfg.eps and np.log2(gain).is_integer()
    for xs in _inputs(entry, 3)[:30]:
        for x in model.apply([cfg.bos, *xs]).residuals:
            np.testing.assert_allclose(x.sum(axis=-1), 0, atol=1e-12)
            np.testing.assert_allclose(_layer_norm(x, gain, 0.0, cfg.eps), x, rtol=1e-12,
                                       atol=1e-12)


def test_norm_costs_at_most_two_dimensions_and_no_layer():
    """LayerNorm adds two residual directions (norm:balance, norm:zero), RMSNorm none;
    no layer."""
    for name in ("sort", "frac_prevs", "dyck1"):
        _, plain = _compile(name)
        _, ln = _compile(name, norm="layernorm")
        _, rms = _compile(name, norm="rmsnorm")
        assert ln.config.d_model == plain.config.d_model + 2
        assert ln.residual_labels[-2:] == [normalize.BALANCE, normalize.ZERO]
        assert rms.config.d_model == plain.config.d_model
        assert ln.config.n_layers == rms.config.n_layers == plain.config.n_layers


def test_balance_is_written_by_every_sublayer_and_read_by_none():
    """The balance column is the negated sum of every write and no reader reads it; no
    writer writes the zero direction and every reader column sums to 0 with it, so a
    shift of every coordinate (LayerNorm's rounded mean) changes no reader's input."""
    _, model = _compile("hist", norm="layernorm")
    w, b, z = model.weights, model.config.d_model - 2, model.config.d_model - 1
    for name in ("embed.W_E", "pos_embed.W_pos", "blocks.0.attn.W_O", "blocks.0.mlp.W_out"):
        np.testing.assert_allclose(w[name].sum(axis=-1), 0, atol=1e-12)
        assert not w[name][..., z].any()
    readers = [w[f"blocks.0.attn.W_{n}"].transpose(1, 0, 2) for n in "QKV"]
    readers += [w["blocks.0.mlp.W_in"], w["unembed.W_U"]]
    for a in readers:                                   # [d_model, ...]
        assert not a[b].any() and a[z].any()
        np.testing.assert_allclose(a.sum(axis=0), 0, atol=1e-9)
    assert any(b in s.writes for steps in model.circuit.values() for s in steps)
    assert any(z in s.reads for steps in model.circuit.values() for s in steps)


def test_gelu_pre_activations_are_far_from_zero():
    """With activation='gelu' every MLP pre-activation on every input is 0 or at least
    GELU_Z in magnitude (computed here from the residuals apply returns)."""
    entry, model = _compile("sort_unique", norm="layernorm", activation="gelu")
    cfg, w = model.config, model.weights
    assert cfg.act_fn == "gelu_new"
    smallest = np.inf
    for xs in _inputs(entry, 3)[:60]:
        res = model.apply([cfg.bos, *xs]).residuals
        for i in range(cfg.n_layers):
            x = res[2 * i + 1]                      # the residual the MLP reads (post-norm)
            pre = x @ w[f"blocks.{i}.mlp.W_in"] + w[f"blocks.{i}.mlp.b_in"]
            big = np.abs(pre)[np.abs(pre) > 1e-6]
            smallest = min(smallest, big.min(initial=np.inf))
    assert smallest >= gelu.GELU_Z * 0.99


def test_gelu_new_equals_relu_far_from_zero():
    """gelu_new rounds to ReLU exactly at |z| >= GELU_Z, in float64 and float32."""
    for dtype in (np.float64, np.float32):
        z = np.array([-1e6, -100, -gelu.GELU_Z, gelu.GELU_Z, 100, 1e6], dtype=dtype)
        np.testing.assert_array_equal(gelu.gelu_new(z), np.maximum(z, 0))


def test_structured_forward_runs_normalised_models():
    """forward(structured=True) equals the dense reference on a normalised model."""
    entry, model = _compile("sort_unique", norm="layernorm", activation="gelu")
    ids = model.input_encoder.encode([[model.config.bos, *xs] for xs in _inputs(entry, 4)
                                      if len(xs) == 4])
    np.testing.assert_array_equal(model.forward(ids), model.forward(ids, structured=False))


@pytest.mark.parametrize("name", ["hist", "frac_prevs", "prev_sum", "sort"])
def test_verify_in_float64_and_float32(name):
    """Exhaustive verify passes in float64 and in float32, means and floats included."""
    entry = PROGRAMS[name]
    model = rl.compile(entry.build(), entry.vocab, 4, norm="layernorm", activation="gelu")
    assert not model.config.float64_only
    for dtype in (np.float64, np.float32):
        assert rl.verify(entry.build(), entry.vocab, 4, model=model, dtype=dtype).ok


def test_post_norm_runs_the_same_weights():
    """The same weights run post-norm (embed.ln, ln1 after attention, ln2 after the MLP,
    as BERT) give the same logits; BERT's deeper post-norm form is float64-only in float32
    rounding terms past 3 layers."""
    import attrs

    from rasplang.backend.hf import float64_only

    entry, model = _compile("sort_unique", norm="layernorm")
    w = {k.replace("ln_final.", "embed.ln."): v for k, v in model.weights.items()}
    post = rl.backend.CompiledModel(attrs.evolve(model.config, norm_position="post"), w,
                                    model.residual_labels, model.input_encoder,
                                    model.output_encoder, model.circuit, model.program)
    ids = model.input_encoder.encode([[model.config.bos, *xs] for xs in _inputs(entry, 4)])
    np.testing.assert_allclose(post.forward(ids), model.forward(ids), atol=1e-12)
    _, deep = _compile("sort_by_most_freq", norm="layernorm")
    assert deep.config.n_layers > 3 and "as BERT" in float64_only(deep, "bert")
    assert float64_only(deep, "gpt2") == "" == float64_only(model, "bert")


def test_saved_model_keeps_its_norm(tmp_path):
    """save/load keeps normalization_type, norm_position, eps and the norm weights."""
    entry, model = _compile("frac_prevs", causal=True, norm="layernorm", activation="gelu")
    loaded = rl.load(model.save(tmp_path / "m.safetensors"))
    assert loaded.config == model.config
    xs = _inputs(entry, 4)[:50]
    assert loaded.run(xs) == model.run(xs)


@pytest.mark.parametrize(("kw", "match"), [({"norm": "batchnorm"}, "norm must be one of"),
                                           ({"activation": "tanh"}, "activation must be one of")])
def test_bad_options_are_refused(kw, match):
    """An unknown norm or activation is a ValueError naming the allowed values."""
    with pytest.raises(ValueError, match=match):
        rl.compile(rl.tokens, [1, 2], 3, **kw)


def test_eps_is_a_power_of_four_above_the_bound():
    """choose_eps gives 4^k with eps >= 2^56 S / d."""
    for s, d in ((1.0, 1), (37.5, 12), (1e6, 300)):
        eps = normalize.choose_eps(s, d)
        assert eps >= 2.0 ** 56 * s / d and eps < 4 * 2.0 ** 56 * s / d + 4
        assert np.log(eps) / np.log(4) == pytest.approx(round(np.log(eps) / np.log(4)))


def test_large_values_make_layernorm_float64_only():
    """Coordinates that sum to 3e8 make LayerNorm's mean too coarse for float32: the model
    says why and refuses float32; float64 stays exact."""
    program = rl.numerical(rl.Map(lambda x: x * 100_000_000 + 0.5, rl.tokens))
    assert not rl.compile(program, [1, 2, 3], 3).config.float64_only
    model = rl.compile(program, [1, 2, 3], 3, norm="layernorm")
    assert "LayerNorms" in model.config.float64_only
    assert rl.verify(program, [1, 2, 3], 3, model=model).ok
    with pytest.raises(ValueError, match="float64 only"):
        model.run([[1, 2]], dtype=np.float32)


def test_gelu_refuses_a_unit_whose_inputs_err_too_much():
    """gelu_scales names the node of a unit whose pre-activations are closer to 0 than
    twice its inputs' error, and scales the others by powers of 2 to at least GELU_Z."""
    from rasplang.backend.craft.bases import BasisDirection
    from rasplang.backend.spaces import SOpSpace, bos_direction

    labels = ["one", "tokens:BOS", "x"]
    noisy = SOpSpace("x", True, (0.0, 0.001, 1.0), (BasisDirection("x"),), np.zeros(1),
                     error=0.01)
    rows = gelu.RowSpaces(labels, [noisy], str(bos_direction("BOS")))
    w_in = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    w_in[0, 1] = 1.0                                  # a unit reading only `one`
    scales, problems = gelu.gelu_scales(w_in, rows, ["noisy", "constant"])
    assert problems == [("noisy", pytest.approx(problems[0][1]))]
    assert "off by 0.01" in problems[0][1]
    assert scales[1] >= gelu.GELU_Z and np.log2(scales[1]).is_integer()
