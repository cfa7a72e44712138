"""`rasplang.compress` and `rasplang.smallest_compression` (torch) on tiny models, and a
compressed model through save/load, the Hugging Face export (loaded back as a user loads
it, then verified) and TransformerLens.

Skipped without torch (``make test-interop`` installs it with transformers and
transformer-lens).
"""

import itertools

import numpy as np
import pytest

pytest.importorskip("torch")

import torch

import rasplang as rl
from rasplang.compression import CompressedModel
from rasplang.lib import PROGRAMS

pytestmark = pytest.mark.filterwarnings("ignore::rasplang.backend.compiler.CompilerWarning",
                                        "ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")

N = 3  # 39 to 84 inputs: every test here trains in a second or two


def frac_prevs(**options):
    return library("frac_prevs", **options)


def library(name, **options):
    entry = PROGRAMS[name]
    program = entry.build(N)
    return entry, program, rl.compile(program, entry.vocab, N, **options)


def every_input(entry, model):
    """Ids ``[B, 1 + N]`` of every input of length N (BOS first, no padding)."""
    return model.input_encoder.encode([["BOS", *xs]
                                       for xs in itertools.product(entry.vocab, repeat=N)])


def test_compress_is_deterministic_and_folds_w():
    """The same seed gives the same W; the folded weights are the original ones through W."""
    _, _, model = frac_prevs()
    a = rl.compress(model, 6, steps=40, seed=3, progress=False, polish=0)
    b = rl.compress(model, 6, steps=40, seed=3, progress=False, polish=0)
    assert isinstance(a, CompressedModel)
    assert np.array_equal(a.projection, b.projection)
    w = a.projection
    assert a.config.d_model == 6 and a.projection.shape == (model.config.d_model, 6)
    assert np.allclose(a.weights["embed.W_E"], model.weights["embed.W_E"] @ w)
    assert np.allclose(a.weights["unembed.W_U"], w.T @ model.weights["unembed.W_U"])
    assert a.config.basis.startswith("compress(d_model=")
    assert a.overlaps().shape == (model.config.d_model,) * 2


def test_full_width_compression_verifies_and_matches_the_dense_forward():
    """At d = d_model, training keeps the model exact; verify checks it like any model,
    and the structured and dense forwards agree."""
    entry, program, model = frac_prevs()
    full = rl.compress(model, model.config.d_model, steps=20, lr=1e-4, progress=False)
    report = rl.verify(program, entry.vocab, N, model=full)
    assert report.ok, report.summary()
    ids = model.input_encoder.encode([["BOS", "x", "y", "x"]])
    assert np.allclose(full.forward(ids), full.forward(ids, structured=False), atol=1e-12)


def test_verify_reports_a_too_narrow_compression():
    """A one-dimensional residual cannot hold frac_prevs: verify says where it is wrong."""
    entry, program, model = frac_prevs()
    narrow = rl.compress(model, 1, steps=20, progress=False, polish=0)
    report = rl.verify(program, entry.vocab, N, model=narrow)
    assert not report.ok and report.n_mismatches > 0


def test_compressed_model_saves_loads_and_rotates(tmp_path):
    """A compressed model's file loads back as a CompressedModel with the same W, feature
    labels and training history, computing the same; rotating it keeps its outputs and
    rotates its W."""
    _, _, model = frac_prevs()
    small = rl.compress(model, 5, steps=30, progress=False, polish=0)
    loaded = rl.load(small.save(tmp_path / "small.safetensors"))
    assert isinstance(loaded, CompressedModel)
    assert loaded.config == small.config
    assert np.array_equal(loaded.projection, small.projection)
    assert loaded.features == tuple(model.residual_labels)
    assert loaded.history == small.history and loaded.seconds == small.seconds
    for name, w in small.weights.items():
        assert np.array_equal(loaded.weights[name], w), name
    batch = [list("xyx"), list("zx")]
    assert loaded.run(batch) == small.run(batch)
    turned = small.rotate(2)
    assert isinstance(turned, CompressedModel)
    for got, want in zip(turned.run(batch), small.run(batch)):
        assert np.allclose(got, want, atol=1e-9)
    assert np.allclose(turned.overlaps(), small.overlaps(), atol=1e-12)


def test_compress_refuses_bad_widths_and_norms():
    """A width outside 1..d_model and a norm whose gains differ between coordinates are
    refused, saying why."""
    import attrs

    _, _, model = frac_prevs()
    d_model = model.config.d_model
    with pytest.raises(ValueError, match=rf"d must be an integer in 1\.\.{d_model}"):
        rl.compress(model, d_model + 1, progress=False)
    _, _, ln = frac_prevs(norm="layernorm")
    weights = dict(ln.weights)
    weights["blocks.0.ln1.w"] = weights["blocks.0.ln1.w"] * np.linspace(1, 2, ln.config.d_model)
    with pytest.raises(ValueError, match="gains differ between coordinates"):
        rl.compress(attrs.evolve(ln, weights=weights, cache={}), 4, progress=False)


def test_smallest_compression_finds_an_exact_width():
    """The search returns a width whose model verifies on every input, and records
    every trial."""
    entry, program, model = frac_prevs()
    found = rl.smallest_compression(model, seeds=1, steps=150, low=8, progress=False)
    assert found.d <= model.config.d_model
    assert rl.verify(program, entry.vocab, N, model=found.model).ok
    assert found.trials and all(t.d >= 8 for t in found.trials)
    assert found.accuracy()[model.config.d_model] == 1.0


@pytest.mark.parametrize("name", ["frac_prevs", "reverse"])
def test_layernorm_compression_keeps_the_norm_exact(name):
    """A LayerNorm model compresses with W's rows summing to zero, so the norm stays the
    identity: the compressed model with its norms agrees with the same weights run
    without them, and the trained compression verifies on every input."""
    import attrs

    entry, program, model = library(name, norm="layernorm")
    small = rl.compress(model, model.config.d_model - 4, steps=300, progress=False)
    assert np.abs(small.projection.sum(axis=1)).max() < 1e-12
    assert small.config.normalization_type == "LN" and small.config.eps >= model.config.eps
    bare = attrs.evolve(small, config=attrs.evolve(small.config, normalization_type=None),
                        cache={})
    ids = every_input(entry, model)
    assert np.abs(small.forward(ids) - bare.forward(ids)).max() < 1e-9
    assert rl.verify(program, entry.vocab, N, model=small).ok


def test_compressed_model_refuses_float32():
    """A compressed model is trained and verified in float64 and says so in float32."""
    _, _, model = frac_prevs()
    small = rl.compress(model, 6, steps=20, progress=False, polish=0)
    with pytest.raises(ValueError, match="exact in float64 only"):
        small.run([list("xy")], dtype=np.float32)


def _from_pretrained(model, path):
    """``save_pretrained``, then ``Auto*.from_pretrained`` as a user loads it."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from rasplang.backend.hf import architecture_for

    model.save_pretrained(path)
    auto = (transformers.AutoModelForCausalLM if architecture_for(model) == "gpt2"
            else transformers.AutoModelForMaskedLM)
    return auto.from_pretrained(path)


@pytest.mark.parametrize(("name", "causal", "drop"),
                         [("frac_prevs", True, 4), ("reverse", False, 4),
                          ("reverse", False, 10)], ids=["gpt2", "bert", "bert-inexact"])
def test_hugging_face_export_of_a_compressed_model(tmp_path, name, causal, drop):
    """The export of a compressed model, loaded back with from_pretrained, has the
    compressed model's logits on every input and verifies as it does: exact where it is
    exact, and where it is not, wrong on no input the compressed model gets right."""
    entry, program, model = library(name, causal=causal, norm="layernorm")
    exact = drop == 4  # else a few untrained steps: wrong on many inputs
    small = rl.compress(model, model.config.d_model - drop, steps=300 if exact else 20,
                        polish=30 if exact else 0, progress=False)
    hf = _from_pretrained(small, tmp_path)
    ids = every_input(entry, small)
    with torch.no_grad():
        got = hf(input_ids=torch.as_tensor(ids)).logits.double().numpy()
    want = small.forward(ids)
    np.testing.assert_allclose(got[..., :want.shape[-1]], want, atol=1e-9, rtol=0)
    ours = rl.verify(program, entry.vocab, N, model=small, causal=causal)
    theirs = rl.verify(program, entry.vocab, N, model=hf, causal=causal)
    assert theirs.checked == ours.checked == theirs.total
    if exact:
        assert ours.ok and theirs.ok, (ours.summary(), theirs.summary())
    else:
        assert not ours.ok
        assert theirs.n_mismatches <= ours.n_mismatches


def test_transformer_lens_export_of_a_compressed_model(tmp_path):
    """to_transformer_lens on a compressed model runs and has its logits."""
    pytest.importorskip("transformer_lens")
    entry, _, model = library("frac_prevs", causal=True, norm="layernorm")
    small = rl.compress(model, model.config.d_model - 4, steps=300, progress=False)
    hooked = small.to_transformer_lens()
    ids = every_input(entry, small)
    with torch.no_grad():
        got = hooked(torch.as_tensor(ids)).double().numpy()
    want = small.forward(ids)
    np.testing.assert_allclose(got[..., :want.shape[-1]], want, atol=1e-9, rtol=0)


def test_compress_refuses_bad_options():
    """Unknown loss terms and non-positive steps are refused, naming them."""
    _, _, model = frac_prevs()
    with pytest.raises(ValueError, match=r"unknown loss weights \['resid'\]"):
        rl.compress(model, 4, weights={"resid": 1.0}, progress=False)
    with pytest.raises(ValueError, match="steps, batch and restarts must be at least 1"):
        rl.compress(model, 4, steps=0, progress=False)
    with pytest.raises(ValueError, match=r"restarts=0"):
        rl.compress(model, 4, restarts=0, progress=False)


def test_restarts_keep_the_best_run():
    """A second restart continues the same generator after the first run, so two
    restarts are never worse on the domain than one: the run with fewer inputs wrong
    is kept, not the last one."""
    entry, program, model = library("hist")
    runs = [rl.compress(model, 6, steps=30, polish=0, restarts=r, seed=1, progress=False)
            for r in (1, 2)]
    wrong = [rl.verify(program, entry.vocab, N, model=m).n_mismatches for m in runs]
    assert wrong[1] <= wrong[0]
    if wrong[1] < wrong[0]:   # the second run was kept: its own loss history
        assert runs[1].history != runs[0].history
